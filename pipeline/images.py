"""Recognising image files: magic bytes, extensions, and dimensions read safely."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

#: Pillow refuses images with more pixels than this (decompression bombs)
MAX_IMAGE_PIXELS = 64_000_000

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def sniff_image_type(head: bytes) -> str | None:
    """``png``, ``jpeg`` or ``webp`` from a file's first bytes, or None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


#: the IHDR colour type of a PNG with red, green, blue and alpha channels
PNG_RGBA = 6


def png_has_rgba(head: bytes) -> bool:
    """Whether ``head`` (a file's first 26+ bytes) starts a PNG of colour type RGBA."""
    # signature (8), IHDR length and type (8), width (4), height (4), bit depth (1), colour type (1)
    return (
        head.startswith(b"\x89PNG\r\n\x1a\n")
        and head[12:16] == b"IHDR"
        and len(head) > 25
        and (head[25] == PNG_RGBA)
    )


def image_size_of_file(path: Path) -> tuple[int, int]:
    """Width and height of an image file, from its header only (ValueError if it does not decode)."""
    return _size_of(path)


def image_size_from_bytes(head: bytes) -> tuple[int, int]:
    """Width and height from an image's first bytes (enough to hold its header).

    Only the header is parsed (Pillow opens lazily), so this is cheap; a
    header that does not decode raises ValueError, and one claiming more than
    `MAX_IMAGE_PIXELS` is refused as a decompression bomb.
    """
    return _png_size(head) or _size_of(io.BytesIO(head))


#: (bit depth, colour type) pairs a PNG may declare (PNG spec, table 11.1)
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _png_size(head: bytes) -> tuple[int, int] | None:
    """A PNG's width and height from its IHDR chunk (CRC checked), without Pillow; None otherwise.

    Every image a run downloads is checked, and Pillow costs a noticeable part
    of a run's start to import: a well-formed IHDR says all Pillow would.
    Anything else (another format, a damaged header) goes to Pillow.
    """
    if len(head) < 33 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[8:16] != b"\x00\x00\x00\rIHDR":
        return None
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if depth not in _PNG_DEPTHS.get(colour, ()) or head[26:29] != b"\x00\x00\x00":
        return None
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        return None
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"decompression bomb: {width}x{height} is more than {MAX_IMAGE_PIXELS} pixels")
    return width, height


def _size_of(source: Path | io.BytesIO) -> tuple[int, int]:
    from PIL import Image  # only for what `_png_size` does not read

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                width, height = image.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"decompression bomb: {exc}") from exc
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"cannot read image: {exc}") from exc
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"implausible image size {width}x{height}")
    return width, height
