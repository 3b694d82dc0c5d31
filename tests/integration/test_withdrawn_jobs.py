"""Jobs taken out of a manifest are withdrawn: never run, never paid; what was sent keeps its history.

SPEC §4 (editing a manifest keeps the keys of unchanged jobs), §6 (never pay
twice, workers need no manifest), §11 (status, export). Each test edits a
manifest between plans and runs against the fake server over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.fake_server import FakeServer
from pipeline.jobs import PlannedJob
from pipeline.keys import job_key
from pipeline.leases import HOST
from pipeline.ledger.records import Completion, ManifestRecord, Outcome, Response
from pipeline.ledger.repository import opened_ledger
from pipeline.planning import plan_report, save_plan
from pipeline.recovery import KeptAnswer
from pipeline.reporting import status_summary
from pipeline.results import ApiResult, GeneratedImage
from pipeline.running import run_worker
from tests.integration.conftest import run, write_manifest

PROMPTS = [f"withdrawn test {i}" for i in range(20)]


def generate(prompts: list[str]) -> str:
    """A `jobs:` body of one generate entry with these prompts."""
    return f"- op: generate\n  model: V_2\n  prompts: {json.dumps(prompts)}\n"


def billed_prompts(server: FakeServer) -> list[str]:
    """The prompts of the calls the fake server billed, in order."""
    return [str((entry.fields or {}).get("prompt")) for entry in server.state.log if entry.billed]


def ledger_of(folder: Path) -> str:
    return f"sqlite:///{folder}/ledger.db"


async def command(*args: str) -> str:
    """An ideobatch command as a user types it (in a thread: it runs its own event loop); its stdout."""
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


async def export_rows(ledger: str, name: str) -> list[dict[str, Any]]:
    """`ideobatch export NAME --format jsonl` as rows."""
    text = await command("export", name, "--ledger", ledger, "--format", "jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_prompts_cut_after_a_saved_plan_bill_only_those_left(
    tmp_path: Path, fake_server: FakeServer, ledger_url: str
) -> None:
    """20 prompts planned, cut to 3: plan and run count 3, only those 3 are billed, status has none pending.

    Putting the prompts back makes the withdrawn jobs pending again: the rest is then run, once.
    """
    ledger = ledger_url
    manifest = write_manifest(tmp_path, generate(PROMPTS))
    await save_plan(str(manifest), ledger, None)
    write_manifest(tmp_path, generate(PROMPTS[:3]))
    report = await plan_report(str(manifest), ledger)
    assert (report["jobs"], report["to_run"]) == (3, 3)

    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger)
    assert code == 0, summary
    assert sorted(billed_prompts(fake_server)) == PROMPTS[:3]
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 3, "failed": 0, "withdrawn": 17}
    assert summary["run"]["succeeded"] == 3
    status = await status_summary(ledger, "t")
    assert status["jobs"]["pending"] == 0
    assert status["jobs"]["withdrawn"] == 17
    text = await command("status", "t", "--ledger", ledger)
    assert "(total 3)" in text
    assert "17 withdrawn: no longer in the manifest, never run" in text

    # a worker (which reads no manifest) finds nothing to do
    outcome = await run_worker(ledger, follow=False, quiet=True, lease_s=30, base_url=fake_server.url)
    assert outcome.code == 0
    assert len(billed_prompts(fake_server)) == 3

    write_manifest(tmp_path, generate(PROMPTS))
    assert (await plan_report(str(manifest), ledger))["to_run"] == 17
    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger)
    assert code == 0, summary
    assert sorted(billed_prompts(fake_server)) == sorted(PROMPTS)
    assert summary["jobs"]["succeeded"] == 20
    assert summary["jobs"]["withdrawn"] == 0


async def test_a_run_stopped_by_budget_then_cut_keeps_what_was_paid(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A run stopped by its budget after 5 jobs; the list cut to two done and one new prompt.

    Only the new one is billed; the 3 paid jobs no longer in the manifest keep their images,
    cost and export rows; the 14 others are withdrawn.
    """
    ledger = ledger_of(tmp_path)
    manifest = write_manifest(tmp_path, generate(PROMPTS), extra="limits:\n  concurrency: 1\n")
    code, summary = await run(manifest, fake_server, tmp_path, budget_usd=0.40)
    assert code == 3
    assert summary["jobs"]["succeeded"] == 5
    done = billed_prompts(fake_server)
    kept = [*done[:2], PROMPTS[15]]
    write_manifest(tmp_path, generate(kept))

    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger)
    assert code == 0, summary
    assert billed_prompts(fake_server) == [*done, PROMPTS[15]]
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 6, "failed": 0, "withdrawn": 14}
    assert summary["spend_usd"] == pytest.approx(6 * 0.08)
    rows = await export_rows(ledger, "t")
    assert sorted(row["prompt"] for row in rows) == sorted([*done, PROMPTS[15]])
    assert all(Path(row["path"]).is_file() for row in rows)
    assert sum(row["cost_usd"] for row in rows) == pytest.approx(6 * 0.08)


async def test_an_edit_whose_source_file_changed_runs_the_new_job_only(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A v3-edit planned, then its image changes: the re-plan's new job runs; the old one is withdrawn.

    The old job never runs, so it never ends as a source_changed failure, and the run exits 0.
    """
    Image.new("RGB", (40, 40), (5, 50, 90)).save(tmp_path / "door.png")
    Image.new("L", (40, 40), 0).save(tmp_path / "door-mask.png")
    manifest = write_manifest(
        tmp_path,
        '- op: v3-edit\n  prompt: a red door\n  images: [door.png]\n  mask: "{stem}-mask.png"\n',
        kind="ideogram",
    )
    ledger = ledger_of(tmp_path)
    await save_plan(str(manifest), ledger, None)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "door.png")

    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger)
    assert code == 0, summary
    assert summary["failures"] == {}
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 1, "failed": 0, "withdrawn": 1}
    assert fake_server.state.stats()["billed"] == 1


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_jobs_sent_before_they_were_removed_are_never_sent_again(
    tmp_path: Path, fake_server: FakeServer, ledger_url: str
) -> None:
    """A job in flight when its run died, and one waiting to retry after an unanswered call, are removed.

    Neither is sent again (nothing billed), both are withdrawn, and their attempts stay in the
    ledger: status still counts them in doubt.
    """
    ledger = ledger_of(tmp_path)
    manifest = write_manifest(tmp_path, generate(PROMPTS[:4]))
    await save_plan(str(manifest), ledger, None)
    async with opened_ledger(ledger) as opened:
        record = await opened.get_manifest("t")
        assert record is not None
        owner = f"{HOST}:dead:1"
        run_id = await opened.start_run(
            owner=owner, kind="run", manifest_id=record.id, host=HOST, pid=dead_pid()
        )
        claim = await opened.claim_jobs(record.id, owner, 2, 600)
        sent = await opened.record_attempts(owner, run_id, [job.id for job in claim.jobs])
        crashed, retrying = claim.jobs
        # one call timed out after it was sent: back to pending, to be retried
        await opened.settle_attempts(
            owner,
            [Outcome(retrying.id, sent[retrying.id], "timeout", "read timeout", in_doubt=True)],
            final=False,
        )
        # the other was in flight when the run died (its lease still held)
    removed = {crashed.request["prompt"], retrying.request["prompt"]}
    write_manifest(tmp_path, generate([p for p in PROMPTS[:4] if p not in removed]))

    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger)
    assert code == 0, summary
    assert sorted(billed_prompts(fake_server)) == sorted(set(PROMPTS[:4]) - removed)
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 2, "failed": 0, "withdrawn": 2}
    assert summary["in_doubt"] == 2
    listed = json.loads(await command("status", "t", "--ledger", ledger, "--in-doubt", "--json"))
    assert {a["prompt"] for a in listed["attempts"]} == removed


async def test_a_manifest_cut_leaves_other_manifests_jobs_alone(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """Two manifests share a ledger: cutting one withdraws its jobs only; a worker then runs the other's."""
    ledger = ledger_of(tmp_path)
    first = write_manifest(tmp_path, generate(PROMPTS[:5]), name="first")
    second = write_manifest(tmp_path, generate(PROMPTS[:5]), name="second")
    for manifest in (first, second):
        await save_plan(str(manifest), ledger, None)
    write_manifest(tmp_path, generate(PROMPTS[:1]), name="first")
    await save_plan(str(first), ledger, None)

    assert (await status_summary(ledger, "first"))["jobs"]["withdrawn"] == 4
    assert (await status_summary(ledger, "second"))["jobs"]["pending"] == 5
    outcome = await run_worker(ledger, follow=False, quiet=True, lease_s=30, base_url=fake_server.url)
    assert outcome.code == 0
    assert fake_server.state.stats()["billed"] == 1 + 5


async def test_an_interrupted_plan_withdraws_nothing(
    tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-plan that stops part way leaves the jobs it had not reached pending; the next plan withdraws."""
    ledger = ledger_of(tmp_path)
    manifest = write_manifest(tmp_path, generate(PROMPTS))
    await save_plan(str(manifest), ledger, None)
    write_manifest(tmp_path, generate(PROMPTS[:3]))

    from pipeline import planning

    real_expand = planning.expand

    def interrupted(loaded: Any) -> Any:
        jobs = real_expand(loaded)
        yield next(jobs)
        raise KeyboardInterrupt

    monkeypatch.setattr(planning, "expand", interrupted)
    with pytest.raises(KeyboardInterrupt):
        await save_plan(str(manifest), ledger, None)
    status = await status_summary(ledger, "t")
    assert (status["jobs"]["pending"], status["jobs"]["withdrawn"]) == (20, 0)

    monkeypatch.setattr(planning, "expand", real_expand)
    code, summary = await run(manifest, fake_server, tmp_path, ledger_url=ledger)
    assert code == 0, summary
    assert (summary["jobs"]["succeeded"], summary["jobs"]["withdrawn"]) == (3, 17)
    assert fake_server.state.stats()["billed"] == 3


async def test_chained_jobs_of_a_removed_entry_are_withdrawn_and_come_back_with_it(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A describe ran, its generate children wait; the entry is removed: the children are never billed.

    Put back, the entry's children are pending again and run.
    """
    fake_server.set_faults(descriptions_per_image=2)
    Image.new("RGB", (32, 32), (10, 120, 30)).save(tmp_path / "forest.png")
    chained = (
        "- op: describe\n  images: [forest.png]\n  then:\n    - op: generate\n"
        '      prompt: "{description}, studio lighting"\n      model: V_2_TURBO\n'
    )
    manifest = write_manifest(tmp_path, chained + generate(PROMPTS[:1]))
    code, summary = await run(manifest, fake_server, tmp_path, max_jobs=1)
    assert summary["by_op"]["describe"]["succeeded"] == 1
    assert summary["by_op"]["generate"]["pending"] == 3  # two children and the plain job
    write_manifest(tmp_path, generate(PROMPTS[:1]))

    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert [e.op for e in fake_server.state.log if e.billed] == ["describe", "generate"]
    assert summary["by_op"]["generate"] == {
        "pending": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "withdrawn": 2,
    }
    assert summary["by_op"]["describe"]["succeeded"] == 1  # paid, kept

    write_manifest(tmp_path, chained + generate(PROMPTS[:1]))
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 4, "failed": 0, "withdrawn": 0}
    assert [e.op for e in fake_server.state.log if e.billed].count("describe") == 1


async def test_a_job_in_flight_when_its_plan_dropped_it_records_its_answer_and_is_not_retried(
    tmp_path: Path,
) -> None:
    """Jobs claimed before a re-plan that drops them: one answered is kept, one to retry is withdrawn.

    A failed job the manifest no longer has is not put back by `retry`.
    """
    ledger = ledger_of(tmp_path)
    manifest = write_manifest(tmp_path, generate(PROMPTS[:4]))
    await save_plan(str(manifest), ledger, None)
    async with opened_ledger(ledger) as opened:
        record = await opened.get_manifest("t")
        assert record is not None
        owner = "elsewhere:1:a"
        claimed = (await opened.claim_jobs(record.id, owner, 2, 600)).jobs
        attempts = await opened.record_attempts(owner, None, [job.id for job in claimed])
        write_manifest(tmp_path, generate(PROMPTS[2:4]))
        await save_plan(str(manifest), ledger, None)
        states = await opened.job_states(record.id, [job.key for job in claimed])
        assert set(states.values()) == {"running"}  # in flight: left to its worker
        first, second = claimed
        await opened.settle_attempts(
            owner, [Outcome(first.id, attempts[first.id], "http_503", "busy", 503)], final=False
        )
        await opened.settle_attempts(
            owner, [Outcome(second.id, attempts[second.id], "bad_request", "no", 400)], final=True
        )
        states = await opened.job_states(record.id, [job.key for job in claimed])
        assert states == {first.key: "withdrawn", second.key: "failed"}
        assert await opened.reset_jobs(record.id, states=("failed",), reason=None) == 0
        assert (await opened.job_counts(record.id)) == {"pending": 2, "withdrawn": 1, "failed": 1}


async def test_chained_jobs_follow_their_entry_when_an_entry_above_it_is_removed(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """The entry above a describe → generate chain is removed while the chain's children wait: they run."""
    fake_server.set_faults(descriptions_per_image=2)
    Image.new("RGB", (32, 32), (10, 120, 30)).save(tmp_path / "forest.png")
    chained = (
        "- op: describe\n  images: [forest.png]\n  then:\n    - op: generate\n"
        '      prompt: "{description}, studio lighting"\n      model: V_2_TURBO\n'
    )
    manifest = write_manifest(tmp_path, generate(PROMPTS[:1]) + chained)
    _code, summary = await run(manifest, fake_server, tmp_path, max_jobs=2)
    assert summary["jobs"]["succeeded"] == 2
    assert summary["jobs"]["pending"] == 2  # the describe's children
    write_manifest(tmp_path, chained)

    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 4, "failed": 0, "withdrawn": 0}
    assert fake_server.state.stats()["billed"] == 4


async def test_a_paid_answer_kept_on_disk_for_a_job_withdrawn_since_is_recorded(tmp_path: Path) -> None:
    """An answer kept while the ledger was away, for a job a later plan withdrew: recorded, not lost.

    The job is pending again, with its answer, so that a run downloads its images without calling.
    """
    ledger = ledger_of(tmp_path)
    manifest = write_manifest(tmp_path, generate(PROMPTS[:2]))
    await save_plan(str(manifest), ledger, None)
    async with opened_ledger(ledger) as opened:
        record = await opened.get_manifest("t")
        assert record is not None
        owner = "elsewhere:1:a"
        (job,) = (await opened.claim_jobs(record.id, owner, 1, 600)).jobs
        attempt = (await opened.record_attempts(owner, None, [job.id]))[job.id]
        await opened.reclaim_expired(now=time.time() + 3600)  # its worker died with the answer on disk
        write_manifest(tmp_path, generate([p for p in PROMPTS[:2] if p != job.request["prompt"]]))
        await save_plan(str(manifest), ledger, None)
        assert await opened.job_states(record.id, [job.key]) == {job.key: "withdrawn"}
        image = GeneratedImage(0, "https://example.test/a.png", "p", "1024x1024", 1, is_image_safe=True)
        answer = KeptAnswer("t", job.key, attempt, 80_000, ApiResult(images=(image,)))
        assert await opened.import_answers(record.id, [answer]) == {job.key}
        assert await opened.job_states(record.id, [job.key]) == {job.key: "pending"}
        assert (await opened.get_manifest_by_id(record.id)).spent_micros == 80_000
        claimed = {j.key: j for j in (await opened.claim_jobs(record.id, owner, 2, 600)).jobs}
        assert claimed[job.key].response_recorded


def planned(prompts: list[str]) -> list[PlannedJob]:
    """Generate jobs as a plan writes them."""
    jobs = []
    for rank, prompt in enumerate(prompts):
        request = {"prompt": prompt, "model": "V_2", "num_images": 1}
        jobs.append(
            PlannedJob(
                job_key("generate", request, None, 0),
                "generate",
                request,
                "0",
                rank,
                0,
                "V_2",
                1,
                Decimal("0.08"),
            )
        )
    return jobs


async def test_a_claim_during_a_plan_leaves_the_jobs_it_has_not_reached(ledger_url: str) -> None:
    """While plan 2 is written, a claim with its number takes only plan 2's jobs; the rest wait for it."""
    async with opened_ledger(ledger_url) as opened:

        async def begin_plan() -> ManifestRecord:
            return await opened.save_manifest(
                name="floor", sha256="0" * 64, path=None, base_dir=".", config={}, budget_micros=None
            )

        await opened.plan_jobs((await begin_plan()).id, planned(["a", "b", "c"]))
        record = await begin_plan()
        await opened.plan_jobs(record.id, planned(["c"]), plan_seq=record.plan_seq)  # part way
        during = await opened.claim_jobs(record.id, "w:1:a", 10, 60, plan_floor=record.plan_seq)
        assert [j.request["prompt"] for j in during.jobs] == ["c"]
        later = await opened.claim_jobs(record.id, "w:1:a", 10, 60)
        assert sorted(j.request["prompt"] for j in later.jobs) == ["a", "b"]


async def test_a_job_dropped_while_in_flight_records_its_answer_and_its_children_are_withdrawn(
    ledger_url: str,
) -> None:
    """A parent answered after the plan that dropped it completes; the chained jobs it makes never run."""
    async with opened_ledger(ledger_url) as opened:
        record = await opened.save_manifest(
            name="inflight", sha256="0" * 64, path=None, base_dir=".", config={}, budget_micros=None
        )
        await opened.plan_jobs(record.id, planned(["parent", "other"]))
        owner = "w:1:a"
        parent = next(j for j in (await opened.claim_jobs(record.id, owner, 2, 60)).jobs if j.rank == 0)
        attempt = (await opened.record_attempts(owner, None, [parent.id]))[parent.id]
        record = await opened.save_manifest(
            name="inflight", sha256="1" * 64, path=None, base_dir=".", config={}, budget_micros=None
        )
        await opened.plan_jobs(record.id, planned(["other"]), plan_seq=record.plan_seq)
        assert await opened.withdraw_unplanned(record.id, record.plan_seq) == 0  # the parent is in flight
        answer = Response(parent.id, attempt, ApiResult(descriptions=("a fox",)), 10_000)
        child = planned(["a fox, studio lighting"])[0]
        done = await opened.complete_jobs(owner, [Completion(parent.id, response=answer, children=[child])])
        assert done == {parent.id}
        states = await opened.job_states(record.id, [parent.key, child.key])
        assert states == {parent.key: "succeeded", child.key: "withdrawn"}
        assert (await opened.get_manifest_by_id(record.id)).spent_micros == 10_000
