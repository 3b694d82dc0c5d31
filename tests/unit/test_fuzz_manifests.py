"""Fuzzed manifests: whatever the input, `validate` exits 0 or 2 with a message — never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main

KEYS = [
    "version",
    "name",
    "provider",
    "kind",
    "defaults",
    "output",
    "dir",
    "limits",
    "concurrency",
    "retry",
    "attempts",
    "initial",
    "jobs",
    "op",
    "prompt",
    "prompts",
    "images",
    "matrix",
    "repeat",
    "then",
    "model",
    "aspect_ratio",
    "num_images",
    "seed",
    "style_type",
    "resolution",
    "csv",
    "column",
    "id",
    "prices",
    "lock",
]
VALUES = ["generate", "remix", "upscale", "describe", "V_2", "ASPECT_1_1", "ON", "OFF", "1s", "../x", "{key}"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(VALUES),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=12))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=6)),
    max_leaves=40,
)

VALID = """version: 1
name: fuzz
defaults: {model: V_2}
jobs:
  - op: generate
    prompt: "a red bicycle"
    matrix:
      aspect_ratio: [ASPECT_1_1, ASPECT_16_9]
"""


def check(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert str(path) in result.output or "m.yaml" in result.output


FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(documents)
def test_structured_documents(document: object) -> None:
    """Random YAML documents built from manifest-like keys and hostile values."""
    check(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(st.dictionaries(keys, documents, max_size=8))
def test_valid_skeleton_with_random_sections(extra: dict) -> None:
    """A valid manifest with random sections merged over it."""
    base = yaml.safe_load(VALID)
    base.update(extra)
    check(yaml.safe_dump(base, allow_unicode=True))


@FUZZ
@given(st.integers(0, len(VALID)), st.text(max_size=8), st.integers(0, 20))
def test_mutated_text(position: int, insert: str, cut: int) -> None:
    """The valid manifest with characters inserted and removed anywhere (broken YAML included)."""
    check(VALID[:position] + insert + VALID[position + cut :])


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    """Bytes that are not UTF-8, or not YAML at all."""
    check(data)


def test_deep_nesting_and_huge_numbers() -> None:
    """Ten thousand nested lists, and numbers far past 64 bits."""
    check("jobs: " + "[" * 10_000 + "]" * 10_000)
    check(VALID.replace("a red bicycle", "x") + "    num_images: 123456789012345678901234567890\n")
    check(VALID + "limits:\n  concurrency: 1e400\n")
