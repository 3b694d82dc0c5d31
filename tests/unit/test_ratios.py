"""`16:9` is accepted wherever a ratio goes and becomes each op's own spelling, found from its schema."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, StrictStr

from pipeline import endpoints
from pipeline.endpoints import Encoding, Endpoint
from pipeline.errors import ManifestError
from pipeline.expand import expand
from pipeline.ratios import normalised_copy
from pipeline.validation import load_valid

HEAD = "version: 1\nname: r\njobs:\n"


class Ratio(StrEnum):
    """A V3-style enum."""

    WIDE = "16x9"
    SQUARE = "1x1"


class FlatRequest(BaseModel):
    """A made-up op spelling ratios `16x9` with a Literal."""

    model_config = ConfigDict(extra="forbid")
    prompt: StrictStr
    aspect_ratio: Literal["16x9", "1x1", "9x16"] | None = None


class EnumRequest(BaseModel):
    """A made-up op spelling ratios `16x9` with an Enum (a `$ref` in its JSON schema)."""

    model_config = ConfigDict(extra="forbid")
    prompt: StrictStr | None = None
    aspect_ratio: Ratio | None = None


def _op(name: str, request: type[BaseModel]) -> Endpoint:
    return Endpoint(
        op=name,
        native_path=f"/x/{name}",
        proxy_path=f"/ideogram/x/{name}",
        encoding=Encoding.FLAT,
        request=request,
        prices={None: Decimal("0.01")},
    )


@pytest.fixture
def flat_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog with two made-up ops that spell ratios `16x9`."""
    extra = {"x-flat": _op("x-flat", FlatRequest), "x-enum": _op("x-enum", EnumRequest)}
    monkeypatch.setattr(endpoints, "CATALOG", {**endpoints.CATALOG, **extra})


@pytest.mark.usefixtures("flat_ops")
@pytest.mark.parametrize(
    ("op", "written", "spelled"),
    [
        ("generate", "16:9", "ASPECT_16_9"),
        ("remix", "1:3", "ASPECT_1_3"),
        ("x-flat", "16:9", "16x9"),
        ("x-flat", " 9 : 16 ", "9x16"),
        ("x-enum", "1:1", "1x1"),
        ("generate", "ASPECT_4_3", "ASPECT_4_3"),  # already spelled: untouched
        ("generate", "5:4", "5:4"),  # not a ratio the op takes: left for validation to refuse
        ("x-flat", "4:3", "4:3"),
    ],
)
def test_a_ratio_is_spelled_as_the_op_takes_it(op: str, written: str, spelled: str) -> None:
    """Each op's own schema decides the spelling; nothing names the op."""
    assert normalised_copy(op, {"aspect_ratio": written}) == {"aspect_ratio": spelled}


@pytest.mark.usefixtures("flat_ops")
def test_one_default_serves_ops_of_both_spellings(tmp_path: Path) -> None:
    """`16:9` in defaults, a job field and matrix values: every job's request in its op's spelling."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        textwrap.dedent(
            """\
            version: 1
            name: r
            defaults: {aspect_ratio: 16:9}
            jobs:
              - {op: generate, prompt: a}
              - {op: x-flat, prompt: b}
              - {op: x-enum, prompt: c, aspect_ratio: 1:1}
              - {op: generate, prompt: d, matrix: {aspect_ratio: [1:1, 9:16]}}
            """
        )
    )
    loaded, _counts = load_valid(str(manifest))
    ratios = {job.request["prompt"] + str(job.rank): job.request["aspect_ratio"] for job in expand(loaded)}
    assert ratios == {
        "a0": "ASPECT_16_9",
        "b0": "16x9",
        "c0": "1x1",
        "d0": "ASPECT_1_1",
        "d1": "ASPECT_9_16",
    }


def test_a_ratio_the_op_lacks_is_refused_with_its_line(tmp_path: Path) -> None:
    """`5:4` on a legacy op: the line, the field, and the op's ratios."""
    manifest = tmp_path / "m.yaml"
    manifest.write_text(HEAD + "  - op: generate\n    prompt: a\n    aspect_ratio: 5:4\n")
    with pytest.raises(ManifestError) as caught:
        load_valid(str(manifest))
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{manifest}:6: jobs[0].aspect_ratio: '5:4' is not one of ASPECT_")


def test_a_written_ratio_keeps_the_key_of_the_spelled_one(tmp_path: Path) -> None:
    """`16:9` and `ASPECT_16_9` are one request, so one job key: re-planning pays nothing again."""
    keys = []
    for ratio in ("16:9", "ASPECT_16_9"):
        manifest = tmp_path / f"{ratio[:2]}.yaml"
        manifest.write_text(HEAD + f"  - {{op: generate, prompt: a, aspect_ratio: {ratio}}}\n")
        loaded, _counts = load_valid(str(manifest))
        keys.append(next(expand(loaded)).key)
    assert keys[0] == keys[1]
