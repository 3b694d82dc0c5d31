"""Recognising image files: magic bytes, extensions, and dimensions read safely."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image

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
    return _size_of(io.BytesIO(head))


def _size_of(source: Path | io.BytesIO) -> tuple[int, int]:
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
