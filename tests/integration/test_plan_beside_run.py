"""`ideobatch run` claims its first jobs while the rest of the plan is written; a plan cut short resumes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from pipeline import planning
from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest

JOBS = 40


def plan_complete(folder: Path) -> list[tuple[str, int]]:
    """(name, plan_complete) of every manifest in the test's ledger."""
    with sqlite3.connect(folder / "ledger.db") as conn:
        return conn.execute("SELECT name, plan_complete FROM manifests").fetchall()


def one_request_per_job(server: FakeServer) -> None:
    """Every job's request reached the server once."""
    prompts = Counter(entry.fields["prompt"] for entry in server.state.log if entry.fields)
    assert len(prompts) == JOBS
    assert set(prompts.values()) == {1}


def manifest(folder: Path) -> Path:
    return write_manifest(folder, f"- {{op: generate, prompts: [{', '.join(f'p{i}' for i in range(JOBS))}]}}")


async def test_the_first_requests_go_out_before_the_plan_is_complete(
    tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest of the plan waits for a first request: the run must have claimed before planning ended."""
    monkeypatch.setattr(planning, "FIRST_BATCH", 5)
    monkeypatch.setattr("pipeline.running.FIRST_BATCH", 5)
    finish = planning.Plan.finish
    seen_at_finish: list[int] = []

    async def after_a_request(plan: planning.Plan, ledger: object) -> object:
        await fake_server.state.wait_until(lambda state: len(state.log) > 0, timeout_s=10)
        seen_at_finish.append(len(fake_server.state.log))
        return await finish(plan, ledger)  # type: ignore[arg-type]

    monkeypatch.setattr(planning.Plan, "finish", after_a_request)
    code, summary = await run(manifest(tmp_path), fake_server, tmp_path)
    assert code == 0
    assert summary["jobs"]["succeeded"] == JOBS
    assert len(seen_at_finish) == 1  # the rest of the plan was written once
    assert seen_at_finish[0] >= 1  # after a request had gone out
    assert plan_complete(tmp_path) == [("t", 1)]
    one_request_per_job(fake_server)


async def test_a_plan_cut_short_is_finished_by_the_next_run(
    tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning that fails after the first jobs leaves the plan incomplete; the next run plans and ends it."""
    monkeypatch.setattr("pipeline.running.FIRST_BATCH", 5)

    async def broken(plan: planning.Plan, ledger: object) -> object:
        raise OSError("disk gone while planning")

    with monkeypatch.context() as patch:
        patch.setattr(planning.Plan, "finish", broken)
        with pytest.raises(OSError, match="disk gone"):
            await run(manifest(tmp_path), fake_server, tmp_path)
    assert plan_complete(tmp_path) == [("t", 0)]
    code, summary = await run(manifest(tmp_path), fake_server, tmp_path)
    assert code == 0
    assert summary["jobs"]["succeeded"] == JOBS
    assert plan_complete(tmp_path) == [("t", 1)]
    one_request_per_job(fake_server)


async def test_a_re_plan_is_complete_before_a_claim_so_removed_jobs_are_never_sent(
    tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs an edit removed are withdrawn when the plan completes: a re-plan is not run beside claims."""
    monkeypatch.setattr("pipeline.running.FIRST_BATCH", 2)
    finish = planning.Plan.finish

    async def slowly(plan: planning.Plan, ledger: object) -> object:
        await asyncio.sleep(0.5)  # time enough for a run beside it to claim
        return await finish(plan, ledger)  # type: ignore[arg-type]

    monkeypatch.setattr(planning.Plan, "finish", slowly)
    first = write_manifest(tmp_path, "- {op: generate, prompts: [gone0, gone1, gone2, kept0, kept1, kept2]}")
    await planning.save_plan(str(first), f"sqlite:///{tmp_path}/ledger.db", None)
    edited = write_manifest(tmp_path, "- {op: generate, prompts: [kept0, kept1, kept2, new0, new1]}")
    code, summary = await run(edited, fake_server, tmp_path)
    assert code == 0
    sent = Counter(entry.fields["prompt"] for entry in fake_server.state.log if entry.fields)
    assert sent == Counter({"kept0": 1, "kept1": 1, "kept2": 1, "new0": 1, "new1": 1})
    assert summary["jobs"]["succeeded"] == 5
