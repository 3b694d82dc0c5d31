"""A downloaded PNG's size read from its header agrees with Pillow, and a damaged header is refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from pipeline.images import image_size_from_bytes


def _png(mode: str, size: tuple[int, int], **params: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG", **params)
    return out.getvalue()


def _chunk(name: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + name + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(name)))


def _pillow_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


@pytest.mark.parametrize(
    ("mode", "size", "params"),
    [
        ("RGB", (1024, 768), {}),
        ("RGBA", (64, 512), {}),
        ("L", (3, 5), {}),
        ("1", (17, 1), {}),
        ("P", (300, 200), {}),
        ("I;16", (9, 9), {}),
        ("RGB", (40, 30), {"pnginfo": None, "optimize": True}),
        ("RGB", (40, 30), {"dpi": (300, 300), "icc_profile": b"x" * 200}),
    ],
)
def test_sizes_agree_with_pillow(mode: str, size: tuple[int, int], params: dict[str, object]) -> None:
    data = _png(mode, size, **{k: v for k, v in params.items() if v is not None})
    assert image_size_from_bytes(data) == _pillow_size(data) == size


def _broken_variants() -> list[tuple[str, bytes]]:
    good = _png("RGB", (32, 16))
    ihdr_end = 8 + 8 + 13 + 4
    bad_crc = bytearray(good)
    bad_crc[ihdr_end - 1] ^= 0xFF
    bad_mode = good[:8] + _chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 16, 8, 5, 0, 0, 0)) + good[ihdr_end:]
    bad_filter = good[:8] + _chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 16, 8, 2, 0, 1, 0)) + good[ihdr_end:]
    no_ihdr = good[:8] + good[ihdr_end:]
    return [
        ("a wrong IHDR checksum", bytes(bad_crc)),
        ("an unknown colour type", bad_mode),
        ("an unknown filter method", bad_filter),
        ("no IHDR before the image data", no_ihdr),
        ("the signature alone", good[:8]),
        ("a header cut inside IHDR", good[:20]),
    ]


@pytest.mark.parametrize(("what", "data"), _broken_variants(), ids=[w for w, _ in _broken_variants()])
def test_a_broken_header_is_refused_as_pillow_refuses_it(what: str, data: bytes) -> None:
    with pytest.raises((SyntaxError, OSError, ValueError)):
        _pillow_size(data)
    with pytest.raises(ValueError, match="cannot read image"):
        image_size_from_bytes(data)


def test_a_header_claiming_too_many_pixels_is_a_decompression_bomb() -> None:
    bomb = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
    bomb += _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")
    with pytest.raises(ValueError, match="decompression bomb"):
        image_size_from_bytes(bomb)
