"""YAML anchors, aliases and merge keys: legitimate uses load, alias bombs are refused at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import ManifestError
from pipeline.yaml_loader import MAX_ALIAS_VALUES, MAX_ALIASES, load_with_lines


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" manifest: each level lists the previous one ``width`` times."""
    rows = ["  l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        rows.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    jobs = "jobs:\n  - op: generate\n    prompt: x\n"
    return "version: 1\nname: laughs\ndefaults:\n" + "\n".join(rows) + "\n" + jobs


def doubling(levels: int) -> str:
    """A deep chain: each level is a mapping holding the previous level twice (2**levels values)."""
    rows = ["d0: &d0 {x: 1}"]
    rows += [f"d{i}: &d{i} {{a: *d{i - 1}, b: *d{i - 1}}}" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


def merge_chain(levels: int, width: int) -> str:
    """Merge keys fanning out: each level merges the previous one ``width`` times."""
    rows = ["m0: &m0 {x: 1, y: 2}"]
    for i in range(1, levels):
        sources = ", ".join([f"*m{i - 1}"] * width)
        rows.append(f"m{i}: &m{i} {{<<: [{sources}], k{i}: {i}}}")
    return "\n".join(rows) + "\n"


FAN_OUT = "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
AT_THE_LIMIT = "a: &a x\nb: [" + ", ".join(["*a"] * MAX_ALIASES) + "]\n"

# (case id, YAML text, expected problem fragment or None when it loads)
CASES: list[tuple[str, str, str | None]] = [
    ("billion-laughs", laughs(), f"m.yaml:8: defaults.l4[0]: aliases expand to more than {MAX_ALIAS_VALUES}"),
    ("wide-fan-out", FAN_OUT, f"m.yaml:2: YAML error: more than {MAX_ALIASES} aliases"),
    ("deep-doubling", doubling(40), f"aliases expand to more than {MAX_ALIAS_VALUES} values"),
    ("merge-key-fan-out", merge_chain(12, 8), f"aliases expand to more than {MAX_ALIAS_VALUES} values"),
    ("aliases-at-the-limit", AT_THE_LIMIT, None),
    ("self-merge", "a: &a {<<: *a, x: 1}\n", "m.yaml:1: a: merges nested too deeply"),
    ("merge-of-a-scalar", "a: 1\nb:\n  <<: 3\n", "m.yaml:3: b: a merge key (<<) takes a mapping"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_aliases_are_bounded(text: str, expected: str | None) -> None:
    """Alias uses and the values they expand to are capped; a bomb is one located problem."""
    if expected is None:
        load_with_lines(text, "m.yaml")
        return
    with pytest.raises(ManifestError) as caught:
        load_with_lines(text, "m.yaml")
    assert len(caught.value.problems) == 1
    assert expected in str(caught.value.problems[0])


def test_the_classic_bomb_is_a_few_hundred_bytes() -> None:
    """The bomb under test is the small one that used to take gigabytes."""
    assert len(laughs().encode()) < 600


MERGED = textwrap.dedent(
    """\
    version: 1
    name: merged
    jobs:
      - &base
        op: generate
        prompt: a red bicycle
        style_type: ANIME
        aspect_ratio: ASPECT_1_1
        matrix:
          magic_prompt_option: &magic [ON, OFF]
      - <<: *base
        prompt: a blue bicycle
      - <<: *base
        prompt: a green bicycle
        style_type: REALISTIC
        matrix: {magic_prompt_option: *magic}
    """
)


def test_merge_keys_load_with_overrides_and_lines() -> None:
    """`<<: *base` merges a job; keys written beside it win, and lines point where each value was written."""
    data, lines = load_with_lines(MERGED, "m.yaml")
    first, second, third = data["jobs"]
    assert second == {**first, "prompt": "a blue bicycle"}
    assert third["style_type"] == "REALISTIC"
    assert third["aspect_ratio"] == "ASPECT_1_1"
    assert third["matrix"] == {"magic_prompt_option": ["ON", "OFF"]}
    assert lines.line_of(("jobs", 1, "prompt")) == 12
    assert lines.line_of(("jobs", 2, "style_type")) == 15
    assert lines.line_of(("jobs", 2, "aspect_ratio")) == 8


def test_a_merge_key_manifest_validates(tmp_path: Path) -> None:
    """A manifest that shares settings between jobs with merge keys is valid."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MERGED)
    result = CliRunner().invoke(main, ["validate", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "6 job(s)" in result.output


def test_a_key_written_twice_beside_a_merge_is_still_a_duplicate() -> None:
    """Merged keys may be overridden, but a mapping's own key written twice is still refused."""
    with pytest.raises(ManifestError, match=r"m.yaml:4: b.x: duplicate key"):
        load_with_lines("a: &a {x: 1}\nb:\n  x: 2\n  x: 3\n  <<: *a\n", "m.yaml")
