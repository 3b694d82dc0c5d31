"""Small JPEG copies of images, made once and kept by content (the sha256 names the file).

Used by the static gallery (a folder beside the HTML file) and by `ideobatch
serve` (a cache folder). A thumbnail is a re-encoding of the pixels, never
the original bytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

THUMB_PX = 256
#: the size of the detail view's preview of a source image
PREVIEW_PX = 1024
THUMB_QUALITY = 80
#: sizes a caller may ask for (each is a cache entry per image)
SIZES = (THUMB_PX, PREVIEW_PX)


def encode(data: bytes, size: int) -> bytes | None:
    """``data`` (an image file's bytes) as a JPEG at most ``size`` px on a side; None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            source.thumbnail((size, size))
            out = io.BytesIO()
            source.convert("RGB").save(out, "JPEG", quality=THUMB_QUALITY, optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return out.getvalue()


def cached(folder: Path, key: str, size: int, read: Callable[[], bytes | None]) -> Path | None:
    """The thumbnail of content ``key`` (its sha256) in ``folder``, made from ``read()`` if missing.

    None when ``read()`` gives nothing or the bytes are not an image.
    """
    name = f"{key[:24]}.jpg" if size == THUMB_PX else f"{key[:24]}-{size}.jpg"
    target = folder / name
    if target.exists():
        return target
    data = read()
    if data is None:
        return None
    encoded = encode(data, size)
    if encoded is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    temp.write_bytes(encoded)
    os.replace(temp, target)
    return target


def make_thumbnail(image: Path, sha256: str, folder: Path, size: int = THUMB_PX) -> Path | None:
    """A JPEG thumbnail of ``image`` in ``folder`` (reused if it exists); None if unreadable."""

    def read() -> bytes | None:
        try:
            return image.read_bytes()
        except OSError:
            return None

    return cached(folder, sha256, size, read)
