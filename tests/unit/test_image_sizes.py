"""Image sizes read from headers: a PNG's IHDR without Pillow, the same answer Pillow gives."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline import images


def png(width: int, height: int, mode: str) -> bytes:
    """A PNG of ``mode`` written by Pillow."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
@pytest.mark.parametrize(("width", "height"), [(1, 1), (640, 360), (1024, 1536)])
def test_a_png_header_gives_the_size_pillow_reads(mode: str, width: int, height: int) -> None:
    """Width and height from the IHDR match Pillow's, for every kind of PNG."""
    data = png(width, height, mode)
    assert images._png_size(data[:64]) == (width, height)
    assert images.image_size_from_bytes(data[:64]) == Image.open(io.BytesIO(data)).size


def test_a_damaged_png_header_is_left_to_pillow_and_refused() -> None:
    """A PNG whose IHDR checksum is wrong is not read by hand: Pillow decides, and it refuses."""
    data = bytearray(png(64, 64, "RGB"))
    data[17] ^= 0xFF  # the width changes; the CRC no longer matches
    assert images._png_size(bytes(data[:64])) is None
    with pytest.raises(ValueError, match="cannot read image"):
        images.image_size_from_bytes(bytes(data[:64]))


def test_a_png_claiming_too_many_pixels_is_a_decompression_bomb() -> None:
    """A header claiming 100,000 x 100,000 is refused from the header alone."""
    import struct
    import zlib

    body = b"IHDR" + struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))
    with pytest.raises(ValueError, match="decompression bomb"):
        images.image_size_from_bytes(head)
