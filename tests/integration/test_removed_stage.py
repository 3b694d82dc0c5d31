"""A `then:` stage taken out of a kept entry: its waiting chained jobs are withdrawn (SPEC §4, §6).

The parent stays in the manifest, so its chained jobs are not under a
dropped job; they are under a stage the manifest no longer has. Before, they
were sent and paid for (while `plan` said nothing was left to run), and the
answers were never recorded as done: finishing them looked the removed stage
up, failed an assertion, and every later run stopped with a traceback.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

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
