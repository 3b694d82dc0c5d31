"""Recognising image files: magic bytes, extensions, and dimensions read safely."""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
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

    Only the header is parsed, so this is cheap: a PNG's by `png_size` (a
    few microseconds, the type of nearly every produced image), others' by
    Pillow (which opens lazily). A header that does not decode raises
    ValueError, and one claiming more than `MAX_IMAGE_PIXELS` is refused as a
    decompression bomb.
    """
    if head.startswith(PNG_SIGNATURE):
        width, height = png_size(head)
        _check_size(width, height)
        return width, height
    return _size_of(io.BytesIO(head))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: (bit depth, colour type) pairs a PNG may have
PNG_MODES = frozenset(
    {(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (8, 2), (16, 2), (1, 3), (2, 3), (4, 3), (8, 3)}
    | {(8, 4), (16, 4), (8, 6), (16, 6)}
)
#: the chunks at which Pillow stops reading a PNG's header (image data, or the end)
_PNG_HEADER_END = frozenset({b"IDAT", b"fdAT", b"IEND"})
_CHUNK_NAME = re.compile(rb"\w{4}")
_CHUNK_HEAD = struct.Struct(">I4s")


def png_size(head: bytes) -> tuple[int, int]:
    """Width and height of the PNG that ``head`` starts, its header checked as Pillow checks it.

    The chunks before the image data must be whole, well named and carry
    their right CRC, and one of them the IHDR of a known bit depth and colour
    type and filter method 0 (ValueError otherwise). Pillow does the same,
    but about ten times slower: this runs for every downloaded image.
    """
    if not head.startswith(PNG_SIGNATURE):
        raise ValueError("cannot read image: not a PNG file")
    size: tuple[int, int] | None = None
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(head):
            raise ValueError("cannot read image: the PNG header is cut short")
        length, name = _CHUNK_HEAD.unpack_from(head, pos)
        if not _CHUNK_NAME.fullmatch(name):
            raise ValueError(f"cannot read image: broken PNG file (chunk {name!r})")
        if name in _PNG_HEADER_END:
            break
        data_at = pos + 8
        end = data_at + length
        if end + 4 > len(head):
            raise ValueError(f"cannot read image: the PNG chunk {name.decode()} is cut short")
        data = head[data_at:end]
        if zlib.crc32(data, zlib.crc32(name)) != int.from_bytes(head[end : end + 4], "big"):
            raise ValueError(f"cannot read image: broken PNG file (bad checksum in {name!r})")
        if name == b"IHDR":
            if length < 13:
                raise ValueError("cannot read image: truncated IHDR chunk")
            width, height, depth, colour, _compression, filtering = struct.unpack_from(">IIBBBB", data)
            if (depth, colour) not in PNG_MODES or filtering:
                raise ValueError(f"cannot read image: unknown PNG mode ({depth}, {colour}, {filtering})")
            size = (width, height)
        pos = end + 4
    if size is None:
        raise ValueError("cannot read image: a PNG without an IHDR chunk")
    return size


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
    _check_size(width, height)
    return width, height


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"implausible image size {width}x{height}")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"decompression bomb: {width}x{height} is more than {MAX_IMAGE_PIXELS:,} pixels")
