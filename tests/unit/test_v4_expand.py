"""Ideogram 4.0 jobs: JSON prompts in chained stages and overrides, keys, rows, tiers and prices."""

from __future__ import annotations

import json
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pipeline.endpoints import endpoint
from pipeline.expand import ParentResult, expand, expand_children
from pipeline.jobs import PlannedJob
from pipeline.manifest import LoadedManifest, parse_manifest
from pipeline.pricing import PriceTable, valid_override_key
from pipeline.structured import merge_patch

DESCRIBED = {
    "high_level_description": "A red mug on a table",
    "style_description": {"art_style": "photorealistic", "lighting": "soft window light"},
    "compositional_deconstruction": {
        "background": "A wooden table",
        "elements": [{"type": "obj", "bbox": [200, 300, 800, 700], "desc": "A red mug"}],
    },
    "tags": ["mug"],
}
CHAIN = """
version: 1
name: t
defaults:
  aspect_ratio: "16:9"
  rendering_speed: TURBO
jobs:
  - op: v4-describe
    images: [https://example.com/mug.png]
    then:
      - op: v4-generate
        json_prompt: "{json_prompt}"
        json_prompt_overrides:
          style_description: {art_style: watercolor}
          tags: null
      - op: v4-remix
        prompt: "{description}, in blue"
      - op: generate
        prompt: "{description}"
"""


def load(folder: Path, text: str) -> LoadedManifest:
    path = folder / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return parse_manifest(path.read_text(), str(path), path)


def children(folder: Path, text: str, described: dict[str, Any]) -> list[PlannedJob]:
    """The chained jobs of the manifest's first job after it described ``described``."""
    loaded = load(folder, text)
    [parent] = list(expand(loaded))
    result = ParentResult(0, description=json.dumps(described))
    spec = loaded.manifest.jobs[0]
    return list(expand_children(parent, spec, [result], loaded.manifest.defaults, PriceTable(), folder))


def test_merge_patch_is_rfc_7396() -> None:
    """Mappings merge recursively, other values replace, null removes; the arguments stay as they were."""
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None, "h": "i"}, "l": [3], "n": {"o": None}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e", "h": "i"}, "l": [3], "n": {}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    assert merge_patch({"a": "b"}, ["c"]) == ["c"]
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}


def test_a_stage_takes_the_described_object_with_its_overrides(tmp_path: Path) -> None:
    """`"{json_prompt}"` is the object, patched; `{description}` its summary; defaults reach each op."""
    generate, remix, legacy = children(tmp_path, CHAIN, DESCRIBED)
    expected = merge_patch(DESCRIBED, {"style_description": {"art_style": "watercolor"}, "tags": None})
    assert generate.request == {"json_prompt": expected, "rendering_speed": "TURBO"}
    assert expected["style_description"] == {"art_style": "watercolor", "lighting": "soft window light"}
    assert remix.request == {"prompt": "A red mug on a table, in blue", "rendering_speed": "TURBO"}
    assert remix.source == "https://example.com/mug.png"
    assert legacy.request == {"prompt": "A red mug on a table", "aspect_ratio": "ASPECT_16_9"}
    assert DESCRIBED["tags"] == ["mug"]


def test_a_childs_key_is_derived_from_the_resolved_object(tmp_path: Path) -> None:
    """The same description gives the same keys; another description or override, another key."""
    first = [c.key for c in children(tmp_path, CHAIN, DESCRIBED)]
    assert first == [c.key for c in children(tmp_path, CHAIN, json.loads(json.dumps(DESCRIBED)))]
    other = {**DESCRIBED, "high_level_description": "A blue mug on a table"}
    assert children(tmp_path, CHAIN, other)[0].key != first[0]
    restyled = CHAIN.replace("art_style: watercolor", "art_style: ink drawing")
    changed = [c.key for c in children(tmp_path, restyled, DESCRIBED)]
    assert changed[0] != first[0]
    assert changed[1:] == first[1:]


def test_rows_carry_v4_fields_and_json_prompts(tmp_path: Path) -> None:
    """A JSONL row sets seed and resolution with its prompt, or gives a json_prompt the job patches."""
    rows = [
        {"prompt": "a kettle", "seed": 5, "resolution": "1280x720", "rendering_speed": "QUALITY", "id": "k1"},
        {"json_prompt": {k: v for k, v in DESCRIBED.items() if k != "tags"}, "id": "m1"},
    ]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = """
    version: 1
    name: t
    jobs:
      - op: v4-generate
        prompts: rows.jsonl
        json_prompt_overrides: {style_description: {medium: ink}}
    """
    kettle, mug = list(expand(load(tmp_path, text)))
    assert kettle.request == {
        "prompt": "a kettle",
        "seed": 5,
        "resolution": "1280x720",
        "rendering_speed": "QUALITY",
    }
    assert (kettle.source_id, kettle.model, kettle.cost_usd) == ("k1", "QUALITY", Decimal("0.10"))
    assert mug.request["json_prompt"]["style_description"]["medium"] == "ink"
    assert "prompt" not in mug.request
    assert (mug.source_id, mug.model, mug.cost_usd) == ("m1", "DEFAULT", Decimal("0.06"))


@pytest.mark.parametrize(
    ("op", "speed", "price"),
    [
        ("v4-generate", "TURBO", "0.03"),
        ("v4-remix", "DEFAULT", "0.06"),
        ("v4-image-to-image", "QUALITY", "0.10"),
        ("v4-generate", "BALANCED", "0.06"),
    ],
)
def test_v4_prices_by_rendering_speed(op: str, speed: str, price: str) -> None:
    """A V4 job costs its speed's price per image; BALANCED is an estimate, FLASH has no price."""
    ep = endpoint(op)
    assert ep.tier_of({"rendering_speed": speed}) == speed
    assert PriceTable().job_cost(op, speed, 1) == Decimal(price)
    assert PriceTable().is_estimate(op, speed) == (speed == "BALANCED")
    assert not valid_override_key(f"{op}.FLASH")
    assert ep.tier_of({}) == "DEFAULT"


def test_v4_describe_is_priced_as_describe_and_answers_a_json_prompt() -> None:
    """One estimated $0.01 a call, as legacy describe; its answer is the JSON prompt generate takes."""
    describe, generate = endpoint("v4-describe"), endpoint("v4-generate")
    assert PriceTable().job_cost("v4-describe", None, 1) == Decimal("0.01")
    assert PriceTable().is_estimate("v4-describe", None)
    assert describe.answer is not None
    assert generate.structured_field(describe.answer.name) is describe.answer
    assert generate.to_wire({"prompt": "x", "seed": 1}) == {"text_prompt": "x", "seed": 1}
    assert generate.from_wire({"text_prompt": "x"}) == {"prompt": "x"}
    assert endpoint("v4-image-to-image").to_wire({"prompt": "x"}) == {"prompt": "x"}
