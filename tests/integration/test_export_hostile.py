"""Adversarial pass on issue 24 : export's --picked cost, --out it cannot write, hf --picked."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.fake_server import FakeServer
from pipeline.ledger.gallery import GalleryFilter
from pipeline.ledger.repository import Ledger
from tests.integration.test_export import Matrix, matrix  # noqa: F401  (fixture)


def _picked_copy(matrix: Matrix, tmp_path: Path) -> str:  # noqa: F811
    """A copy of the ledger where one image of a 2-image "two kites" job is picked."""
    copy = tmp_path / "ledger.db"
    shutil.copy(matrix.ledger.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    frame = pd.read_csv(io.StringIO(CliRunner().invoke(main, ["export", "mx", "--ledger", url]).stdout))
    assert len(frame[frame["prompt"] == "two kites"]) == 4

    async def pick() -> None:
        ledger = await Ledger.open(url)
        try:
            page = await ledger.gallery_page(1, GalleryFilter(prompt="two kites"))
            assert await ledger.set_pick(page.rows[0].image_id, "picked")
        finally:
            await ledger.close()

    asyncio.run(pick())
    return url


def test_a_picked_image_costs_its_share_not_its_whole_job(matrix: Matrix, tmp_path: Path) -> None:  # noqa: F811
    """--picked: one image of a 2-image job picked costs half the job (0.08), as in the full export."""
    url = _picked_copy(matrix, tmp_path)
    result = CliRunner().invoke(main, ["export", "mx", "--ledger", url, "--picked"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert len(frame) == 1
    assert frame["cost_usd"].tolist() == [0.08]


def test_hf_takes_picked_too(matrix: Matrix, tmp_path: Path) -> None:  # noqa: F811
    """--format hf --picked: metadata.jsonl lists the picked image only (or the option is refused)."""
    url = _picked_copy(matrix, tmp_path)
    out = matrix.folder / "out"
    result = CliRunner().invoke(main, ["export", "mx", "--ledger", url, "--format", "hf", "--picked"])
    if result.exit_code == 0:
        lines = (out / "metadata.jsonl").read_text().splitlines()
        assert [json.loads(line)["pick"] for line in lines] == ["picked"]
    else:
        assert result.exit_code == 2, result.output


def test_an_out_file_that_cannot_be_written_is_a_message_not_a_traceback(
    matrix: Matrix,  # noqa: F811
    tmp_path: Path,
) -> None:
    """--out in a folder that does not exist, or naming a folder: exit 2 or 5 with a message."""
    for out in (tmp_path / "missing" / "x.csv", tmp_path):
        result = CliRunner().invoke(main, ["export", "mx", "--ledger", matrix.ledger, "--out", str(out)])
        assert result.exit_code in (2, 5), (out, result.exception)
        assert "error" in result.output


def test_a_symlink_to_a_manifest_finds_the_same_ledger(
    tmp_path: Path, threaded_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cron/m.yaml -> ../project/m.yaml`: a run through the link pays for nothing the project's run made.

    Found: the ledger went beside the link (``cron/.ideobatch/ledger.db``), a new
    one, so every job was paid for again (and its images written to ``cron/out``).
    """
    from tests.integration.test_ledger_location import ideobatch, project

    manifest = project(tmp_path, threaded_server)
    first = ideobatch(manifest.parent, monkeypatch, "run", "m.yaml", "--quiet", "--json")
    assert first.exit_code == 0, first.output
    sent = len(threaded_server.state.log)
    cron = tmp_path / "cron"
    cron.mkdir()
    (cron / "m.yaml").symlink_to(manifest)
    again = ideobatch(cron, monkeypatch, "run", "m.yaml", "--quiet", "--json")
    assert again.exit_code == 0, again.output
    assert len(threaded_server.state.log) == sent
    assert not (cron / ".ideobatch").exists()
