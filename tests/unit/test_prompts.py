"""Prompts files with per-row settings: cells typed from the op's schema, files streamed."""

from __future__ import annotations

import tracemalloc
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from pipeline import cells
from pipeline.api_schema import ImageRequest
from pipeline.expand import expand
from pipeline.manifest import load_manifest
from pipeline.validation import load_valid


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("seed", "42", 42),
        ("seed", "+7", 7),
        ("num_images", "3", 3),
        ("negative_prompt", "blurry, 3", "blurry, 3"),
        ("color_palette", '{"name": "PASTEL"}', {"name": "PASTEL"}),
    ],
)
def test_a_cell_becomes_its_fields_type(field: str, text: str, value: Any) -> None:
    """The field's type comes from the op's request model."""
    assert cells.convert(cells.field_kinds(ImageRequest)[field], text) == value


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        (cells.INT, "4.0", "'4.0' is not a whole number"),
        (cells.INT, "1_000", "'1_000' is not a whole number"),
        (cells.BOOL, "maybe", "'maybe' is not true or false"),
        (cells.FLOAT, "x", "'x' is not a number"),
        (cells.JSON, "{name: PASTEL", "not JSON"),
    ],
)
def test_a_cell_that_does_not_convert_says_why(kind: str, text: str, message: str) -> None:
    """The message names the text and what it should have been."""
    with pytest.raises(ValueError, match=message):
        cells.convert(kind, text)


@pytest.mark.parametrize(("text", "value"), [("true", True), ("Yes", True), ("0", False), ("FALSE", False)])
def test_boolean_cells(text: str, value: bool) -> None:
    """true/false, yes/no and 1/0, in any case."""
    assert cells.convert(cells.BOOL, text) is value


def write_rows(folder: Path, rows: int) -> Path:
    """A manifest reading a prompts CSV of ``rows`` rows, each with its own ratio, seed and count."""
    with (folder / "p.csv").open("w") as handle:
        handle.write("prompt,aspect_ratio,seed,num_images\n")
        for i in range(rows):
            ratio = ("16:9", "1:1")[i % 2]
            handle.write(f"prompt number {i} with a few more words,{ratio},{i},{1 + i % 4}\n")
    manifest = folder / "m.yaml"
    manifest.write_text("version: 1\nname: t\njobs:\n  - {op: generate, prompts: p.csv}\n")
    return manifest


def test_rows_are_expanded_as_a_stream(tmp_path: Path) -> None:
    """The first jobs of a 200,000-row CSV come without the file being read into memory."""
    loaded = load_manifest(write_rows(tmp_path, 200_000))
    tracemalloc.start()
    try:
        first = list(islice(expand(loaded), 3))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(j.request["aspect_ratio"], j.request["seed"], j.num_images) for j in first] == [
        ("ASPECT_16_9", 0, 1),
        ("ASPECT_1_1", 1, 2),
        ("ASPECT_16_9", 2, 3),
    ]
    assert peak < 2_000_000


def test_validating_rows_holds_no_more_memory_for_more_rows(tmp_path: Path) -> None:
    """Checking every row of a 20,000-row CSV (all settings distinct) stays within a few MB."""
    manifest = write_rows(tmp_path, 20_000)
    tracemalloc.start()
    try:
        _loaded, counts = load_valid(str(manifest))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts.total == 20_000
    assert peak < 4_000_000


def test_a_rows_values_are_part_of_its_job_key(tmp_path: Path) -> None:
    """Editing one row's seed makes that row a new job; the other rows keep their keys."""
    manifest = write_rows(tmp_path, 3)
    before = [job.key for job in expand(load_manifest(manifest))]
    table = tmp_path / "p.csv"
    table.write_text(table.read_text().replace(",1,2\n", ",99,2\n"))
    after = [job.key for job in expand(load_manifest(manifest))]
    assert [b == a for b, a in zip(before, after, strict=True)] == [True, False, True]
