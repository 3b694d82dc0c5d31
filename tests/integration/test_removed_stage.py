"""A `then:` stage taken out of a kept entry: its waiting chained jobs are withdrawn (SPEC §4, §6).

The parent stays in the manifest, so its chained jobs are not under a
dropped job; they are under a stage the manifest no longer has. Before, they
were sent and paid for (while `plan` said nothing was left to run), and the
answers were never recorded as done: finishing them looked the removed stage
up, failed an assertion, and every later run stopped with a traceback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest

DESCRIBE = "- op: describe\n  images: [forest.png]\n"
THEN = '  then:\n    - op: generate\n      prompt: "{description}, studio lighting"\n      model: V_2_TURBO\n'


async def test_chained_jobs_of_a_removed_stage_are_withdrawn_not_billed(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    fake_server.set_faults(descriptions_per_image=2)
    Image.new("RGB", (32, 32), (10, 120, 30)).save(tmp_path / "forest.png")
    manifest = write_manifest(tmp_path, DESCRIBE + THEN)
    code, summary = await run(manifest, fake_server, tmp_path, max_jobs=1)
    assert summary["by_op"]["describe"]["succeeded"] == 1
    assert summary["by_op"]["generate"]["pending"] == 2

    write_manifest(tmp_path, DESCRIBE)  # the stage is taken out; the describe stays
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert [e.op for e in fake_server.state.log if e.billed] == ["describe"]
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 1, "failed": 0, "withdrawn": 2}

    write_manifest(tmp_path, DESCRIBE + THEN)  # put back: the chained jobs run, once
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 3, "failed": 0, "withdrawn": 0}
    assert [e.op for e in fake_server.state.log if e.billed] == ["describe", "generate", "generate"]


async def test_a_paid_answer_of_a_removed_stage_is_recorded_without_a_traceback(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A chained job answered before its stage was removed completes (no children); nothing stops the run."""
    Image.new("RGB", (32, 32), (10, 120, 30)).save(tmp_path / "forest.png")
    deeper = THEN + "      then:\n        - op: upscale\n"
    manifest = write_manifest(tmp_path, DESCRIBE + deeper)
    code, summary = await run(manifest, fake_server, tmp_path, max_jobs=2)
    assert summary["by_op"]["generate"]["succeeded"] == 1
    write_manifest(tmp_path, DESCRIBE)
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["by_op"]["generate"]["succeeded"] == 1
    assert "upscale" not in [e.op for e in fake_server.state.log]


async def test_retry_leaves_failed_chained_jobs_of_a_removed_entry(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """`retry --failed` does not put back a chained job whose entry the manifest no longer has."""
    Image.new("RGB", (32, 32), (10, 120, 30)).save(tmp_path / "forest.png")
    fake_server.set_faults(unsafe_word="forbiddenword")
    refused = DESCRIBE + THEN.replace("studio lighting", "forbiddenword")
    plain = "- op: generate\n  prompt: keep me\n"
    manifest = write_manifest(tmp_path, plain + refused)
    _code, summary = await run(manifest, fake_server, tmp_path)
    refused_children = summary["jobs"]["failed"]  # the describe's generate children, refused
    assert refused_children >= 1
    write_manifest(tmp_path, plain)  # the describe entry is taken out
    await run(manifest, fake_server, tmp_path)
    fake_server.set_faults(unsafe_word=None)
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    result = await asyncio.to_thread(
        CliRunner().invoke, main, ["retry", str(manifest), "--failed", "--ledger", ledger]
    )
    assert "2 job(s) put back" not in result.output
    billed = len([e for e in fake_server.state.log if e.billed])
    _code, summary = await run(manifest, fake_server, tmp_path)
    assert len([e for e in fake_server.state.log if e.billed]) == billed
    assert summary["jobs"]["failed"] == refused_children
