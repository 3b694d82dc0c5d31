"""The enum lists and ranges shipped in the package match Ideogram's OpenAPI spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.api_schema import enum_values, schema_data, value_range
from pipeline.endpoints import endpoint

SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "ideogram-openapi.json"
VENDORED = Path(__file__).resolve().parents[1] / "data" / "ideogram-openapi.json"


@pytest.fixture(scope="module")
def spec() -> dict:
    path = SPEC if SPEC.is_file() else VENDORED
    return json.loads(path.read_text())["components"]["schemas"]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("model", "ModelEnum"),
        ("aspect_ratio", "AspectRatio"),
        ("style_type", "StyleType"),
        ("magic_prompt_option", "MagicPromptOption"),
        ("magic_prompt_version", "MagicPromptVersionEnum"),
        ("resolution", "Resolution"),
        ("color_palette_preset", "ColorPalettePresetName"),
        ("describe_model_version", "DescribeModelVersion"),
    ],
)
def test_enum_lists_match_the_spec(spec: dict, ours: str, theirs: str) -> None:
    """Each shipped enum has exactly the values of the spec, in the spec's order."""
    assert list(enum_values(ours)) == spec[theirs]["enum"]


def test_ranges_match_the_spec(spec: dict) -> None:
    """num_images, seed, image_weight, resemblance and detail have the spec's bounds."""
    upscale = spec["UpscaleInitialImageRequest"]["properties"]
    expected = {
        "num_images": spec["NumImages"],
        "seed": spec["Seed"],
        "image_weight": spec["InitialImageRequest"]["properties"]["image_weight"],
        "resemblance": upscale["resemblance"],
        "detail": upscale["detail"],
    }
    for name, schema in expected.items():
        assert value_range(name) == (schema["minimum"], schema["maximum"]), name


def test_fields_per_op_match_the_spec(spec: dict) -> None:
    """The fields each op takes are the properties of its request schema."""
    image_request = set(spec["ImageRequest"]["properties"])
    assert endpoint("generate").fields == image_request
    assert endpoint("remix").fields == image_request | set(spec["InitialImageRequest"]["properties"])
    assert endpoint("upscale").fields == set(spec["UpscaleInitialImageRequest"]["properties"])
    assert endpoint("describe").fields == set(spec["DescribeRequest"]["properties"]) - {"image_file"}


def test_default_model_matches_the_spec(spec: dict) -> None:
    """The model assumed when a request names none is the spec's default."""
    assert schema_data()["default_model"] == spec["ModelEnum"]["default"]
