"""export as a user loads it: a matrix run with an unsafe prompt and 2-image jobs, as CSV, JSONL and hf."""

from __future__ import annotations

import asyncio
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline import retrying
from pipeline.cli import main
from pipeline.fake_server import FakeServer, FaultConfig
from tests.integration.conftest import API_KEY, run, write_manifest

JOBS = """
- op: generate
  prompts: ["a red kite", "a forbidden kite", "a green kite"]
  matrix:
    style_type: [REALISTIC, ANIME]
    aspect_ratio: [ASPECT_1_1, ASPECT_16_9]
- op: generate
  prompt: "two kites"
  num_images: 2
  repeat: 2
- op: describe
  images: ["{url}/_assets/sample/catalog.png?w=64&h=64"]
"""
#: the matrix's 12 jobs less the 4 unsafe ones, plus two 2-image jobs
IMAGES = 8 + 2 * 2


@dataclass(frozen=True)
class Matrix:
    folder: Path
    ledger: str
    spend_usd: float


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """One real run of the matrix against the fake server (its 4 jobs with `forbidden` are refused)."""
    folder = tmp_path_factory.mktemp("export")
    retrying.set_wait_scale(0)

    async def produce() -> dict[str, Any]:
        config = FaultConfig(api_key=API_KEY, seed=11, unsafe_word="forbidden")
        async with FakeServer(config) as server:
            manifest = write_manifest(folder, JOBS.format(url=server.url), name="mx")
            _code, summary = await run(manifest, server, folder)
            return summary

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRAZYROUTER_API_KEY", API_KEY)
        summary = asyncio.run(produce())
    return Matrix(folder, f"sqlite:///{folder}/ledger.db", summary["spend_usd"])


def export(matrix: Matrix, *args: str) -> str:
    """`ideobatch export mx ARGS` in-process, from a working directory that is not the run's."""
    result = CliRunner().invoke(main, ["export", "mx", "--ledger", matrix.ledger, *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_csv_loads_typed_with_request_columns_costs_and_absolute_paths(matrix: Matrix) -> None:
    """CSV in pandas: request fields as columns, integer dtypes, cost summing to the spend, paths absolute."""
    frame = pd.read_csv(io.StringIO(export(matrix, "--format", "csv")))
    assert len(frame) == IMAGES
    for column in ("style_type", "aspect_ratio", "num_images", "prompt", "enhanced_prompt", "cost_usd"):
        assert column in frame.columns
    for column in ("seed", "width", "height", "bytes", "index"):
        assert pd.api.types.is_integer_dtype(frame[column]), (column, frame[column].dtype)
    assert frame.groupby(["style_type", "aspect_ratio"]).size().to_dict() == {
        (style, aspect): 2 for style in ("ANIME", "REALISTIC") for aspect in ("ASPECT_16_9", "ASPECT_1_1")
    }
    descriptions = pd.read_csv(io.StringIO(export(matrix, "--kind", "descriptions")))
    status = CliRunner().invoke(main, ["status", "mx", "--ledger", matrix.ledger, "--json"])
    spend = json.loads(status.stdout)["spend_usd"]
    assert frame["cost_usd"].sum() + descriptions["cost_usd"].sum() == pytest.approx(spend, abs=0.01)
    two = frame[frame["prompt"] == "two kites"]
    assert sorted(two["index"]) == [0, 0, 1, 1]
    assert two["cost_usd"].tolist() == [0.08] * 4
    assert all(os.path.isabs(p) and Path(p).is_file() for p in frame["path"])
    assert (frame["enhanced_prompt"] != frame["prompt"]).all()


def test_failed_jobs_are_rows_with_reason_prompt_and_request_fields(matrix: Matrix) -> None:
    """--state failed lists each refused job with reason, message, prompt and matrix values; all = both."""
    failed = pd.read_csv(io.StringIO(export(matrix, "--state", "failed")))
    assert len(failed) == 4
    assert set(failed["reason"]) == {"unsafe"}
    assert set(failed["prompt"]) == {"a forbidden kite"}
    assert failed["message"].str.contains("safety").all()
    assert sorted(failed["style_type"]) == ["ANIME", "ANIME", "REALISTIC", "REALISTIC"]
    every = pd.read_csv(io.StringIO(export(matrix, "--state", "all")))
    assert len(every) == IMAGES + 4
    assert every["state"].value_counts().to_dict() == {"succeeded": IMAGES, "failed": 4}


def test_jsonl_rows_match_the_csv_columns(matrix: Matrix) -> None:
    """JSONL: one object per image with the CSV's columns, in order, integers as numbers."""
    header = export(matrix).splitlines()[0].split(",")
    rows = [json.loads(line) for line in export(matrix, "--format", "jsonl").splitlines()]
    assert len(rows) == IMAGES
    assert all(list(row) == header for row in rows)
    assert all(isinstance(row["seed"], int) and isinstance(row["bytes"], int) for row in rows)
    assert sum(row["cost_usd"] for row in rows) == pytest.approx(matrix.spend_usd - 0.01, abs=1e-9)


def test_hf_metadata_lists_each_image_relative_to_its_folder(matrix: Matrix, tmp_path: Path) -> None:
    """--format hf: metadata.jsonl in the output folder, one line per image, file_name relative to it."""
    result = CliRunner().invoke(main, ["export", "mx", "--ledger", matrix.ledger, "--format", "hf"])
    assert result.exit_code == 0, result.output
    metadata = matrix.folder / "out" / "metadata.jsonl"
    assert f"{IMAGES} image(s) listed in {metadata}" in result.stderr
    lines = [json.loads(line) for line in metadata.read_text().splitlines()]
    assert len(lines) == IMAGES
    assert len({line["file_name"] for line in lines}) == IMAGES
    header = ["file_name", *export(matrix).splitlines()[0].split(",")]
    for line in lines:
        assert list(line) == header
        assert not os.path.isabs(line["file_name"])
        assert (metadata.parent / line["file_name"]).resolve() == Path(line["path"])
    elsewhere = CliRunner().invoke(
        main, ["export", "mx", "--ledger", matrix.ledger, "--format", "hf", "--out", str(tmp_path)]
    )
    assert elsewhere.exit_code == 2
    assert f"{IMAGES} image(s) are outside {tmp_path.resolve()}" in elsewhere.output
