"""Pure pieces of the fake server: resolutions, PNG rendering, source inspection."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.api_schema import enum_values
from pipeline.fake_server.images import (
    ASPECT_RESOLUTIONS,
    PNG_SIGNATURE,
    UndecodableImage,
    describe,
    inspect_source,
    render_png,
    render_sample,
    resolution_for,
    served_size,
    sniff_format,
)


def _ratio(name: str) -> float:
    _, w, h = name.split("_")
    return int(w) / int(h)


@pytest.mark.parametrize("aspect", enum_values("aspect_ratio"))
def test_every_aspect_ratio_has_a_resolution_of_its_proportions(aspect: str) -> None:
    """Each legacy aspect ratio maps to a resolution within 2% of its proportions."""
    width, height = ASPECT_RESOLUTIONS[aspect]
    assert width / height == pytest.approx(_ratio(aspect), rel=0.02)
    assert width % 16 == 0
    assert height % 16 == 0


def test_resolution_for_prefers_an_explicit_resolution() -> None:
    """RESOLUTION_W_H gives WxH; nothing given gives the 1:1 default."""
    assert resolution_for({"resolution": "RESOLUTION_1280_800"}) == (1280, 800)
    assert resolution_for({"aspect_ratio": "ASPECT_16_9"}) == (1312, 736)
    assert resolution_for({}) == (1024, 1024)


def test_served_size_scales_the_reported_resolution_down() -> None:
    """The served PNG is the reported resolution divided by the scale."""
    assert served_size(1312, 736, 16) == (82, 46)
    assert served_size(1024, 1024, 16) == (64, 64)
    assert served_size(3, 3, 16) == (1, 1)


def test_render_png_is_deterministic_and_decodable() -> None:
    """Same seed and size give identical bytes; another seed gives other bytes."""
    render_png.cache_clear()
    first = render_png(42, 82, 46)
    render_png.cache_clear()
    assert render_png(42, 82, 46) == first
    assert render_png(43, 82, 46) != first
    with Image.open(io.BytesIO(first)) as image:
        image.load()
        assert image.size == (82, 46)
        assert image.format == "PNG"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_samples_are_recognised_by_magic_bytes(fmt: str) -> None:
    """Sample sources in each format sniff as that format and decode to their size."""
    data = render_sample("cat", 120, 80, fmt)  # type: ignore[arg-type]
    assert sniff_format(data) == fmt
    assert inspect_source(data).width == 120


def test_sniff_format_rejects_other_bytes() -> None:
    """GIF, text and empty bytes are not accepted formats."""
    assert sniff_format(b"GIF89a....") is None
    assert sniff_format(b"hello") is None
    assert sniff_format(b"") is None


def test_inspect_source_rejects_a_signature_without_an_image() -> None:
    """A PNG signature followed by garbage does not pass as an image."""
    with pytest.raises(UndecodableImage):
        inspect_source(PNG_SIGNATURE + b"\x00" * 100)


def test_describe_is_deterministic_and_mentions_the_image() -> None:
    """Descriptions are one or two, stable, and name size and dominant colour."""
    info = inspect_source(render_sample("dog", 300, 200, "png"))
    texts = describe(info)
    assert 1 <= len(texts) <= 2
    assert texts == describe(inspect_source(render_sample("dog", 300, 200, "png")))
    assert "300x200" in texts[0]
    assert info.colour in texts[0]
    assert "landscape" in texts[0]
