"""Ideogram 3.0 jobs: files become inputs (in keys and tiers), prices by tier, `plan` marks estimates."""

from __future__ import annotations

import hashlib
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from pipeline.expand import ParentResult, expand, expand_children
from pipeline.manifest import LoadedManifest, parse_manifest
from pipeline.planning import plan_report, render_plan
from pipeline.pricing import PriceTable, valid_override_key


def load(folder: Path, text: str) -> LoadedManifest:
    path = folder / "m.yaml"
    path.write_text(textwrap.dedent(text))
    return parse_manifest(path.read_text(), str(path), path)


def picture(path: Path, size: tuple[int, int], colour: int = 1) -> str:
    """A PNG at ``path``; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (colour, 2, 3)).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


EDITS = """
version: 1
name: t
defaults:
  style_reference_images: [refs/s.png]
jobs:
  - op: v3-edit
    prompt: a door
    images: [img/a.png, img/b.png]
    mask: masks/{stem}.png
  - op: v3-generate
    prompt: a face
    character_reference_images: [refs/c.png]
    style_reference_images: [refs/t.png, https://example.com/u.png]
    then:
      - op: v3-reframe
        resolution: 1312x736
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("a", "b"):
        picture(tmp_path / "img" / f"{name}.png", (8, 8), colour=ord(name))
        picture(tmp_path / "masks" / f"{name}.png", (8, 8), colour=ord(name) + 50)
    for name in ("s", "c", "t"):
        picture(tmp_path / "refs" / f"{name}.png", (8, 8), colour=ord(name))
    return tmp_path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_masks_and_references_become_inputs_in_role_order(folder: Path) -> None:
    """Each edit gets its own mask, then the default references; a job's own list replaces them."""
    edit_a, edit_b, generate = list(expand(load(folder, EDITS)))
    assert [(i.role, i.sha256) for i in edit_a.inputs] == [
        ("mask", sha(folder / "masks/a.png")),
        ("style_reference_images", sha(folder / "refs/s.png")),
    ]
    assert edit_b.inputs[0].location == str(folder / "masks/b.png")
    assert "mask" not in edit_a.request
    assert "style_reference_images" not in edit_a.request
    assert [(i.role, i.identity) for i in generate.inputs] == [
        ("style_reference_images", f"sha256:{sha(folder / 'refs/t.png')}"),
        ("style_reference_images", "https://example.com/u.png"),
        ("character_reference_images", f"sha256:{sha(folder / 'refs/c.png')}"),
    ]


def test_every_input_is_part_of_the_key(folder: Path) -> None:
    """Another mask or reference is another job; the same files give the same keys."""
    before = [j.key for j in expand(load(folder, EDITS))]
    assert before == [j.key for j in expand(load(folder, EDITS))]
    picture(folder / "masks" / "a.png", (8, 8), colour=200)
    after_mask = [j.key for j in expand(load(folder, EDITS))]
    assert after_mask[0] != before[0]
    assert after_mask[1:] == before[1:]
    picture(folder / "refs" / "s.png", (8, 8), colour=201)
    after_reference = [j.key for j in expand(load(folder, EDITS))]
    assert after_reference[0] != after_mask[0]
    assert after_reference[1] != after_mask[1]
    assert after_reference[2] == after_mask[2]  # its own list replaced the default


def test_tiers_follow_speed_character_references_and_upscale(folder: Path) -> None:
    """A character reference is the CHARACTER tier; transparent X2 its own tier; prices by tier."""
    edit, _b, generate = list(expand(load(folder, EDITS)))
    assert (edit.model, edit.cost_usd) == ("DEFAULT", Decimal("0.06"))
    assert (generate.model, generate.cost_usd) == ("CHARACTER_DEFAULT", Decimal("0.15"))
    transparent = load(
        folder,
        """
        version: 1
        name: t
        jobs:
          - op: v3-generate-transparent
            prompt: a logo
            num_images: 2
            matrix:
              rendering_speed: [TURBO, QUALITY]
              upscale_factor: [X1, X4]
        """,
    )
    assert {(j.model, j.cost_usd) for j in expand(transparent)} == {
        ("TURBO", Decimal("0.08")),
        ("TURBO_X4", Decimal("0.08")),
        ("QUALITY", Decimal("0.20")),
        ("QUALITY_X4", Decimal("0.20")),
    }
    table = PriceTable({"v3-generate.CHARACTER_DEFAULT": 0.12, "v3-reframe": 0.05})
    assert table.unit_price("v3-generate", "CHARACTER_DEFAULT") == Decimal("0.12")
    assert table.unit_price("v3-reframe", "QUALITY") == Decimal("0.05")
    assert not table.is_estimate("v3-generate", "CHARACTER_DEFAULT")
    assert valid_override_key("v3-remix.CHARACTER_QUALITY")
    assert not valid_override_key("v3-reframe.CHARACTER_QUALITY")
    assert not valid_override_key("v3-generate-transparent.FLASH")


def test_chained_stages_take_the_parents_image_and_their_references(folder: Path) -> None:
    """A reframe after generate: the produced image is its source, the defaults' references its inputs."""
    loaded = load(folder, EDITS)
    parent = list(expand(loaded))[2]
    produced = folder / "out.png"
    produced_sha = picture(produced, (8, 8), colour=9)
    result = ParentResult(0, image_path=str(produced), image_sha256=produced_sha)
    spec = loaded.manifest.jobs[1]
    [child] = expand_children(parent, spec, [result], loaded.manifest.defaults, PriceTable(), base_dir=folder)
    assert (child.op, child.source, child.source_sha256) == ("v3-reframe", str(produced), produced_sha)
    assert [(i.role, i.sha256) for i in child.inputs] == [
        ("style_reference_images", sha(folder / "refs/s.png"))
    ]
    assert child.request == {"resolution": "1312x736"}


async def test_plan_shows_cost_per_op_and_tier_and_marks_estimates(folder: Path) -> None:
    """`plan` has one row per op and tier; BALANCED and X2 rows are marked as estimates."""
    path = folder / "p.yaml"
    path.write_text(
        "version: 1\nname: p\nprices: {v3-generate.QUALITY: 0.5}\njobs:\n"
        "  - op: v3-generate\n    prompt: x\n    matrix:\n      rendering_speed: [BALANCED, QUALITY]\n"
        "  - op: v3-generate-transparent\n    prompt: y\n    upscale_factor: X2\n"
    )
    report = await plan_report(str(path), f"sqlite:///{folder}/none.db")
    rows = {(r["op"], r["model"]): (r["estimated"], r["estimate_usd"]) for r in report["by_op_model"]}
    assert rows == {
        ("v3-generate", "BALANCED"): (True, 0.06),
        ("v3-generate", "QUALITY"): (False, 0.5),
        ("v3-generate-transparent", "DEFAULT_X2"): (True, 0.07),
    }
    text = render_plan(report)
    assert "v3-generate             BALANCED" in text
    assert [line.endswith("*") for line in text.splitlines()[2:5]] == [True, False, True]
    assert "* an estimate" in text
