"""The disk estimate of `plan` and `doctor`: each op's image size at about 1.5 bytes a pixel."""

from __future__ import annotations

import pytest

from pipeline.footprint import BYTES_PER_PIXEL, DEFAULT_PIXELS, human_bytes, job_bytes


@pytest.mark.parametrize(
    ("op", "request_", "images", "pixels"),
    [
        ("generate", {}, 1, DEFAULT_PIXELS),
        ("generate", {"num_images": 3}, 3, 3 * DEFAULT_PIXELS),
        ("remix", {"resolution": "RESOLUTION_1280_768"}, 2, 2 * 1280 * 768),
        ("upscale", {}, 1, 4 * DEFAULT_PIXELS),  # twice the size each way
        ("describe", {}, 1, 0),  # text only
    ],
)
def test_each_op_is_estimated_from_its_image_size(
    op: str, request_: dict[str, str], images: int, pixels: int
) -> None:
    """Pixels from the resolution (or about a megapixel) times the op's scale, times bytes a pixel."""
    assert job_bytes(op, request_, images) == int(pixels * BYTES_PER_PIXEL)


def test_sizes_are_shown_as_disks_are_sold() -> None:
    """Powers of 1000, one decimal."""
    assert [human_bytes(n) for n in (512, 6_291_456, 3.2e9)] == ["512 B", "6.3 MB", "3.2 GB"]
