"""A rough estimate of the disk space a plan's images will take (`plan`, `doctor`).

Ideogram answers with PNG images of about a megapixel (1024x1024, or the
same area in another ratio: 1312x736); an upscale doubles each side. A PNG
of a generated picture runs 1 to 2 bytes a pixel, so the estimate is
pixels x `BYTES_PER_PIXEL` per image: the request's `resolution` when it
names one (``RESOLUTION_1280_768``, ``1312x736``), else `DEFAULT_PIXELS`,
times the op's output scale squared. Ops that return descriptions take no
room. It is meant to catch a disk that is clearly too small, not to predict
a file's size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline import endpoints

#: bytes a produced image takes per pixel, on average (PNG of a generated picture: 1 to 2)
BYTES_PER_PIXEL = 1.5
#: pixels of an image whose request names no resolution (Ideogram's outputs are about 1 MP)
DEFAULT_PIXELS = 1024 * 1024
_SIZE = re.compile(r"(\d{2,5})[x_](\d{2,5})")


def image_pixels(op: str, request: Mapping[str, Any]) -> int:
    """The estimated pixels of one image a request produces."""
    pixels = DEFAULT_PIXELS
    resolution = request.get("resolution")
    if isinstance(resolution, str) and (size := _SIZE.search(resolution)):
        pixels = int(size.group(1)) * int(size.group(2))
    scale = endpoints.endpoint(op).output_scale
    return pixels * scale * scale


def job_bytes(op: str, request: Mapping[str, Any], images: int) -> int:
    """The estimated bytes on disk of a job's images (0 for an op that returns descriptions)."""
    if not endpoints.endpoint(op).makes_images:
        return 0
    return int(images * image_pixels(op, request) * BYTES_PER_PIXEL)


_UNITS = ("B", "kB", "MB", "GB", "TB")


def human_bytes(count: float) -> str:
    """``1536000`` as ``1.5 MB`` (powers of 1000, as disks are sold)."""
    value, unit = float(count), _UNITS[0]
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            break
        value /= 1000
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
