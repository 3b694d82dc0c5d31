"""The pictures: resolutions, deterministic PNG rendering, and looking at source images.

Ideogram does not publish which resolution a legacy ``aspect_ratio`` produces.
ASSUMPTION (notes §11.5): the table below, the 1-megapixel sizes of the V2
resolution list; a ``resolution`` of ``RESOLUTION_W_H`` produces ``WxH``.
Ideogram 3.0 spells both ``WxH`` (``aspect_ratio: 16x9``, ``resolution:
1312x736``); a V3 aspect ratio produces the resolution of the V3 list whose
proportions are closest to it (the one nearest a megapixel among equals), and
so does a V3 op that keeps its source's proportions (edit, replace-background:
the spec types every V3 ``resolution`` as one of its list).
Transparent images are RGBA PNGs (`render_rgba_png`). The
server reports the full resolution but serves PNGs scaled down by
``image_scale`` (16: 1312x736 is served as 82x46) so that tests stay fast.
Rendering is a pure function of (seed, size, variant): the same seed at the same
size gives byte-identical PNGs, cached in an LRU.
"""

from __future__ import annotations

import hashlib
import io
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, cast

from PIL import Image

from pipeline.api_schema_v3 import enum_values as v3_enum
from pipeline.images import sniff_image_type

#: reported resolution of each legacy aspect ratio (ASSUMPTION, see module docstring)
ASPECT_RESOLUTIONS: dict[str, tuple[int, int]] = {
    "ASPECT_1_1": (1024, 1024),
    "ASPECT_16_9": (1312, 736),
    "ASPECT_9_16": (736, 1312),
    "ASPECT_4_3": (1152, 864),
    "ASPECT_3_4": (864, 1152),
    "ASPECT_3_2": (1248, 832),
    "ASPECT_2_3": (832, 1248),
    "ASPECT_16_10": (1280, 800),
    "ASPECT_10_16": (800, 1280),
    "ASPECT_1_3": (576, 1728),
    "ASPECT_3_1": (1728, 576),
}
DEFAULT_ASPECT = "ASPECT_1_1"
#: a variant with this bit set is rendered as an RGBA PNG (a transparent background)
ALPHA_VARIANT = 0x80
_MEGAPIXEL = 1024 * 1024
MAX_SAMPLE_SIDE = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ImageFormat = Literal["png", "jpeg", "webp"]

_PNG_CACHE_SIZE = 4096
_TEMPLATE_CACHE_SIZE = 512
_SAMPLE_CACHE_SIZE = 256

#: named colours for descriptions, nearest match wins
_COLOUR_NAMES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (20, 20, 20)),
    ("white", (240, 240, 240)),
    ("grey", (128, 128, 128)),
    ("red", (200, 40, 40)),
    ("orange", (230, 130, 30)),
    ("yellow", (230, 210, 50)),
    ("green", (50, 160, 60)),
    ("teal", (30, 140, 140)),
    ("blue", (40, 70, 200)),
    ("purple", (120, 50, 170)),
    ("pink", (230, 120, 170)),
    ("brown", (120, 80, 40)),
)


def _wxh(text: str) -> tuple[int, int] | None:
    width, sep, height = text.partition("x")
    return (int(width), int(height)) if sep and width.isdigit() and height.isdigit() else None


@lru_cache(maxsize=256)
def v3_resolution_like(width: int, height: int) -> tuple[int, int]:
    """The V3 resolution closest to the proportions ``width``:``height`` (then nearest 1 MP)."""
    sizes = [size for r in v3_enum("resolution") if (size := _wxh(r)) is not None]
    return min(sizes, key=lambda s: (abs(s[0] / s[1] - width / height), abs(s[0] * s[1] - _MEGAPIXEL)))


def v3_aspect_resolution(aspect: str) -> tuple[int, int]:
    """The V3 resolution an aspect ratio ``WxH`` produces."""
    return v3_resolution_like(*(_wxh(aspect) or (1, 1)))


def resolution_for(params: dict[str, object]) -> tuple[int, int]:
    """The (width, height) a request with an aspect ratio or a resolution produces."""
    resolution = params.get("resolution")
    if isinstance(resolution, str) and resolution.startswith("RESOLUTION_"):
        _, w, h = resolution.split("_")
        return int(w), int(h)
    if isinstance(resolution, str) and (size := _wxh(resolution)):
        return size
    aspect = params.get("aspect_ratio")
    if isinstance(aspect, str) and _wxh(aspect):
        return v3_aspect_resolution(aspect)
    return ASPECT_RESOLUTIONS[aspect if isinstance(aspect, str) else DEFAULT_ASPECT]


def served_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """The size of the PNG actually served for a reported resolution."""
    return max(1, round(width / scale)), max(1, round(height / scale))


def _palette(seed: int, variant: int) -> bytes:
    """Four RGB colours (12 bytes) derived from the seed."""
    return hashlib.blake2b(f"{seed}:{variant}".encode(), digest_size=12).digest()


@lru_cache(maxsize=_TEMPLATE_CACHE_SIZE)
def _template(width: int, height: int, layout: int) -> tuple[bytes, int, int]:
    """A four-colour palette PNG of one layout, and where its PLTE data sits (offset, length)."""
    image = Image.new("P", (width, height), 0)
    image.putpalette(bytes(12))
    image.paste(1, (0, height * 2 // 3, width, height))
    image.paste(2, (width // 8, height // 8, max(width // 8 + 1, width // 2), height // 2))
    left = min((layout + 4) * width // 10, width - 1)
    image.paste(3, (left, height // 4, width, max(height // 4 + 1, height * 3 // 5)))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    png = out.getvalue()
    chunk = png.index(b"PLTE") - 4
    length = int.from_bytes(png[chunk : chunk + 4], "big")
    return png, chunk + 8, length


@lru_cache(maxsize=_PNG_CACHE_SIZE)
def render_png(seed: int, width: int, height: int, variant: int = 0) -> bytes:
    """A decodable PNG of exactly width x height, a pure function of its arguments.

    The pixels (palette indices) depend on the size and one of five layouts;
    the seed picks the four colours. Encoding a PNG costs far more than the
    rest of a download, so each layout is encoded once and only its PLTE chunk
    (colours and CRC) is rewritten per seed.
    """
    png, offset, length = _template(width, height, seed % 5)
    palette = _palette(seed, variant).ljust(length, b"\0")[:length]
    crc = zlib.crc32(b"PLTE" + palette).to_bytes(4, "big")
    return png[:offset] + palette + crc + png[offset + length + 4 :]


@lru_cache(maxsize=_PNG_CACHE_SIZE)
def render_rgba_png(seed: int, width: int, height: int, variant: int = 0) -> bytes:
    """A decodable RGBA PNG of exactly width x height: shapes of the seed's colours on a clear ground."""
    colours = _palette(seed, variant)
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((*colours[0:3], 255), (width // 8, height // 8, max(width // 8 + 1, width // 2), height // 2))
    image.paste(
        (*colours[3:6], 200), (width // 3, height // 3, max(width // 3 + 1, width * 7 // 8), height * 7 // 8)
    )
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def render_image(seed: int, width: int, height: int, variant: int = 0) -> bytes:
    """The PNG an image URL serves: RGBA when ``variant`` has `ALPHA_VARIANT` set."""
    if variant & ALPHA_VARIANT:
        return render_rgba_png(seed, width, height, variant)
    return render_png(seed, width, height, variant)


@lru_cache(maxsize=_SAMPLE_CACHE_SIZE)
def render_sample(name: str, width: int, height: int, fmt: ImageFormat) -> bytes:
    """A deterministic source image named ``name`` in PNG, JPEG or WebP."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    png = render_png(seed, width, height, 99)
    if fmt == "png":
        return png
    with Image.open(io.BytesIO(png)) as image:
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG" if fmt == "jpeg" else "WEBP", quality=85)
    return out.getvalue()


def sniff_format(data: bytes) -> ImageFormat | None:
    """JPEG, PNG or WebP by magic bytes (as the runner checks them); None for anything else."""
    kind = sniff_image_type(data[:32])
    return cast(ImageFormat, kind) if kind is not None else None


class UndecodableImage(ValueError):
    """The bytes carry an image signature but do not decode."""


@dataclass(frozen=True)
class SourceInfo:
    """What the server learns from a source image."""

    width: int
    height: int
    colour: str
    sha256: str


def inspect_source(data: bytes) -> SourceInfo:
    """Size and dominant colour of a source image (UndecodableImage if it does not decode)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image.draft("RGB", (32, 32))
                small = image.convert("RGB").resize((1, 1), Image.Resampling.BOX)
                pixel = small.getpixel((0, 0))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UndecodableImage(f"image_file could not be decoded: {exc}") from exc
    except Image.DecompressionBombWarning as exc:
        raise UndecodableImage(f"image_file is too large to decode: {exc}") from exc
    rgb = pixel if isinstance(pixel, tuple) else (0, 0, 0)
    return SourceInfo(width, height, colour_name(rgb[:3]), hashlib.sha256(data).hexdigest())


def colour_hex(name: str) -> str:
    """The ``#RRGGBB`` of a colour name `colour_name` gives (grey for a name it does not give)."""
    rgb = dict(_COLOUR_NAMES).get(name, (128, 128, 128))
    return "#" + "".join(f"{c:02X}" for c in rgb)


def colour_name(rgb: tuple[float, ...]) -> str:
    """The nearest named colour."""
    return min(_COLOUR_NAMES, key=lambda item: sum((a - b) ** 2 for a, b in zip(item[1], rgb, strict=True)))[
        0
    ]


def orientation(width: int, height: int) -> str:
    """``square``, ``landscape`` or ``portrait``."""
    if abs(width - height) <= max(width, height) // 20:
        return "square"
    return "landscape" if width > height else "portrait"


def describe(info: SourceInfo) -> list[str]:
    """One or two plausible, deterministic descriptions of a source image."""
    shape = orientation(info.width, info.height)
    texts = [
        f"A {shape} abstract composition of {info.width}x{info.height} pixels, "
        f"dominated by {info.colour} tones, with flat geometric blocks of colour"
    ]
    if int(info.sha256[:2], 16) % 2:
        texts.append(
            f"Minimalist digital artwork in {info.colour}, bold rectangles and bands, "
            f"{shape} format, clean flat shading"
        )
    return texts
