"""The enum lists and ranges shipped in the package match Ideogram's OpenAPI spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import api_schema_v3
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


# --- Ideogram 3.0 (SPEC §10), against the 2026-07 spec ------------------------------------------

SPEC_2026 = SPEC.with_name("ideogram-openapi-2026-07.json")
VENDORED_2026 = VENDORED.with_name("ideogram-openapi-2026-07.json")
#: each V3 op's request schema in the spec
V3_SCHEMAS = {
    "v3-generate": "GenerateImageRequestV3",
    "v3-remix": "RemixImageRequestV3",
    "v3-edit": "EditImageRequestV3",
    "v3-reframe": "ReframeImageRequestV3",
    "v3-replace-background": "ReplaceBackgroundRequestV3",
    "v3-generate-transparent": "GenerateTransparentImageRequestV3",
}


@pytest.fixture(scope="module")
def spec_2026() -> dict:
    path = SPEC_2026 if SPEC_2026.is_file() else VENDORED_2026
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("rendering_speed", "RenderingSpeed"),
        ("aspect_ratio", "AspectRatioV3"),
        ("resolution", "ResolutionV3"),
        ("style_type", "StyleTypeV3"),
        ("style_preset", "StylePresetV3"),
        ("magic_prompt", "MagicPromptOption"),
        ("upscale_factor", "UpscaleFactor"),
    ],
)
def test_v3_enum_lists_match_the_2026_spec(spec_2026: dict, ours: str, theirs: str) -> None:
    """Each shipped V3 enum has exactly the values of the 2026-07 spec, in its order."""
    assert list(api_schema_v3.enum_values(ours)) == spec_2026["components"]["schemas"][theirs]["enum"]


def test_v3_enum_sizes_are_the_documented_ones() -> None:
    """15 aspect ratios, 69 resolutions and 62 style presets, as the notes count them."""
    sizes = [len(api_schema_v3.enum_values(n)) for n in ("aspect_ratio", "resolution", "style_preset")]
    assert sizes == [15, 69, 62]


def test_v3_defaults_ranges_and_patterns_match_the_2026_spec(spec_2026: dict) -> None:
    """Default speed and upscale factor, num_images, seed, image_weight and the style code pattern."""
    schemas = spec_2026["components"]["schemas"]
    defaults = api_schema_v3.schema_data()["defaults"]
    assert defaults["rendering_speed"] == schemas["RenderingSpeed"]["default"]
    assert defaults["upscale_factor"] == schemas["UpscaleFactor"]["default"]
    assert defaults["style_type"] == schemas["StyleTypeV3"]["default"]
    weight = schemas["RemixImageRequestV3"]["properties"]["image_weight"]
    expected = {"num_images": schemas["NumImages"], "seed": schemas["Seed"], "image_weight": weight}
    for name, schema in expected.items():
        assert api_schema_v3.value_range(name) == (schema["minimum"], schema["maximum"]), name
    pattern = api_schema_v3.schema_data()["patterns"]["style_code"]
    assert pattern == schemas["StyleCode"]["pattern"]


def test_v3_color_palette_is_still_the_legacy_one(spec_2026: dict) -> None:
    """color_palette reuses the legacy schema's palette: the 2026-07 spec still agrees with it."""
    schemas = spec_2026["components"]["schemas"]
    assert list(enum_values("color_palette_preset")) == schemas["ColorPalettePresetName"]["enum"]
    member = schemas["ColorPaletteMember"]["properties"]
    assert schema_data()["color_hex_pattern"] == member["color_hex"]["pattern"]
    weight = schema_data()["ranges"]["color_weight"]
    assert weight == [member["color_weight"]["minimum"], member["color_weight"]["maximum"]]
    for op in V3_SCHEMAS:
        props = schemas[V3_SCHEMAS[op]]["properties"]
        if "color_palette" in props:
            assert props["color_palette"]["$ref"].endswith("/ColorPaletteWithPresetNameOrMembers")


@pytest.mark.parametrize("op", list(V3_SCHEMAS))
def test_v3_ops_match_their_paths_and_schemas(spec_2026: dict, op: str) -> None:
    """Path, fields, files (lists as arrays of binary), required ones and the auth status, per op."""
    ep = endpoint(op)
    operation = spec_2026["paths"][ep.native_path]["post"]
    content = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    assert content.endswith("/" + V3_SCHEMAS[op])
    schema = spec_2026["components"]["schemas"][V3_SCHEMAS[op]]
    props = schema["properties"]
    files = {name for name, prop in props.items() if _is_file(prop)}
    assert ep.fields == set(props) - files
    assert ep.file_names | ({ep.image} if ep.image else set()) == files
    for role in ep.files:
        assert (props[role.name]["type"] == "array") == role.many, role.name
    required = set(schema.get("required", []))
    assert set(ep.required) == required - files
    assert {r.name for r in ep.files if r.required} | ({ep.image} if ep.image else set()) == required & files
    assert str(ep.unauthorized_status) in operation["responses"]
    assert str({401: 403, 403: 401}[ep.unauthorized_status]) not in operation["responses"]


def test_v3_edit_is_sent_to_inpaint_which_edit_deprecates_for(spec_2026: dict) -> None:
    """v3-edit calls /inpaint; /edit is deprecated and takes the same schema."""
    paths = spec_2026["paths"]
    assert paths["/v1/ideogram-v3/edit"]["post"]["deprecated"] is True
    inpaint = paths[endpoint("v3-edit").native_path]["post"]
    assert not inpaint.get("deprecated")
    edit_body = paths["/v1/ideogram-v3/edit"]["post"]["requestBody"]["content"]
    assert edit_body == inpaint["requestBody"]["content"]


def test_transparent_refuses_what_the_spec_says_it_refuses(spec_2026: dict) -> None:
    """The rendering speeds refused for a transparent background are the ones its description names."""
    text = spec_2026["paths"][endpoint("v3-generate-transparent").native_path]["post"]["description"]
    for refused in api_schema_v3.TRANSPARENT_REFUSED_SPEEDS:
        assert f"rendering_speed={refused}` is not supported" in text


def _is_file(prop: dict) -> bool:
    item = prop.get("items", prop)
    return item.get("format") == "binary"
