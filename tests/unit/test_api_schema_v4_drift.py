"""The Ideogram 4.0 data shipped in the package match the 2026-07 OpenAPI spec (SPEC §10)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline import api_schema_v4
from pipeline.endpoints import endpoint

SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "ideogram-openapi-2026-07.json"
VENDORED = Path(__file__).resolve().parents[1] / "data" / "ideogram-openapi-2026-07.json"
#: each V4 op's request schema in the spec
V4_SCHEMAS = {
    "v4-generate": "GenerateImageRequestV4",
    "v4-remix": "RemixImageRequestV4",
    "v4-image-to-image": "GenerateImageRequestV4Im2Im",
    "v4-describe": "DescribeRequestV4",
}
#: annotations the shipped JSON prompt schema leaves out (they validate nothing)
ANNOTATIONS = {"description", "example", "title"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    path = SPEC if SPEC.is_file() else VENDORED
    return json.loads(path.read_text())


def inlined(node: Any, schemas: dict[str, Any]) -> Any:
    """A spec schema with its $refs inlined and its annotations left out, as the package ships it."""
    if isinstance(node, list):
        return [inlined(item, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return inlined(schemas[node["$ref"].rsplit("/", 1)[1]], schemas)
    out = {}
    for key, value in node.items():
        if key in ANNOTATIONS or key.startswith("x-"):
            continue
        out[key] = (
            {"propertyName": value["propertyName"]} if key == "discriminator" else inlined(value, schemas)
        )
    return out


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("rendering_speed", "RenderingSpeed"),
        ("resolution", "ResolutionV4"),
        ("resolution_image_to_image", "ResolutionV4ImageToImage"),
        ("magic_prompt_option", "MagicPromptOption"),
    ],
)
def test_v4_enum_lists_match_the_spec(spec: dict[str, Any], ours: str, theirs: str) -> None:
    """Each shipped V4 enum has exactly the spec's values, in its order."""
    assert list(api_schema_v4.enum_values(ours)) == spec["components"]["schemas"][theirs]["enum"]


def test_v4_sizes_defaults_and_ranges_match_the_spec(spec: dict[str, Any]) -> None:
    """36 resolutions (24 for image-to-image); the default speed and describe flags; seed and weight."""
    schemas = spec["components"]["schemas"]
    assert len(api_schema_v4.enum_values("resolution")) == 36
    assert len(api_schema_v4.enum_values("resolution_image_to_image")) == 24
    defaults = api_schema_v4.schema_data()["defaults"]
    assert defaults["rendering_speed"] == schemas["RenderingSpeed"]["default"]
    for name, prop in schemas["DescribeRequestV4"]["properties"].items():
        if "default" in prop:
            assert defaults[name] == prop["default"], name
    weight = schemas["RemixImageRequestV4"]["properties"]["image_weight"]
    assert api_schema_v4.value_range("image_weight") == (weight["minimum"], weight["maximum"])
    assert api_schema_v4.value_range("seed") == (schemas["Seed"]["minimum"], schemas["Seed"]["maximum"])


def test_flash_is_refused_where_the_spec_says_it_is(spec: dict[str, Any]) -> None:
    """The refused speeds are the ones the V4 requests' rendering_speed descriptions say return 400."""
    for op in ("v4-generate", "v4-image-to-image"):
        text = spec["components"]["schemas"][V4_SCHEMAS[op]]["properties"]["rendering_speed"]["description"]
        for refused in api_schema_v4.REFUSED_SPEEDS:
            assert f"`rendering_speed={refused}` currently\nreturn a 400" in text, op


def test_the_json_prompt_schema_is_the_specs(spec: dict[str, Any]) -> None:
    """V4JsonPrompt with its $refs inlined; the example is the spec's and valid; its summary is required."""
    schemas = spec["components"]["schemas"]
    shipped = api_schema_v4.schema_data()["json_prompt"]
    assert shipped["schema"] == inlined(schemas["V4JsonPrompt"], schemas)
    generate = schemas["GenerateImageRequestV4"]["properties"]["json_prompt"]["allOf"]
    assert generate == [{"$ref": "#/components/schemas/V4JsonPrompt"}]
    assert schemas["DescribeResponseV4"]["properties"]["json_prompt"]["$ref"].endswith("/V4JsonPrompt")
    assert shipped["example"] == schemas["V4JsonPrompt"]["example"]
    assert api_schema_v4.json_prompt_problems(api_schema_v4.json_prompt_example()) == []
    assert api_schema_v4.JSON_PROMPT_SUMMARY in schemas["V4JsonPrompt"]["required"]


@pytest.mark.parametrize("op", list(V4_SCHEMAS))
def test_v4_ops_match_their_paths_and_schemas(spec: dict[str, Any], op: str) -> None:
    """Path, fields (by the API's names), the main image, required fields, and the statuses listed."""
    ep = endpoint(op)
    operation = spec["paths"][ep.native_path]["post"]
    content = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    assert content.endswith("/" + V4_SCHEMAS[op])
    schema = spec["components"]["schemas"][V4_SCHEMAS[op]]
    props = schema["properties"]
    files = {name for name, prop in props.items() if prop.get("format") == "binary"}
    assert ep.wire_fields == set(props) - files
    assert ({ep.image} if ep.image else set()) == files
    assert ep.file_names == frozenset()
    required = set(schema.get("required", [])) - files
    assert {ep.wire_names.get(name, name) for name in ep.required} == required
    assert {ep.image} & files <= set(schema.get("required", []))
    if ep.makes_images:
        assert str(ep.unauthorized_status) in operation["responses"]
    for group in ep.one_of:  # "Supply exactly one of `text_prompt` or `json_prompt`"
        wire = [f"`{ep.wire_names.get(name, name)}`" for name in group]
        assert f"exactly one of\n{' or '.join(wire)}" in schema["description"]
