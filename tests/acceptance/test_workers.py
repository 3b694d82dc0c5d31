"""Cooperative workers: several processes on one ledger, one killed midway (SPEC §6 Cooperative workers)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from pipeline.fake_server import FakeServer, FaultConfig
from tests.acceptance.conftest import API_KEY, finish, ideobatch, manifest_for, start

PG = pytest.mark.postgres


async def plan_saved(manifest: Path, ledger: str, cwd: Path, *extra: str) -> None:
    code, _out, err = await ideobatch("plan", str(manifest), "--save", "--ledger", ledger, *extra, cwd=cwd)
    assert code == 0, err


class Query:
    """Read-only SQL on either backend, from the test."""

    def __init__(self, ledger: str) -> None:
        self.ledger = ledger

    async def one(self, sql: str) -> int:
        if self.ledger.startswith("sqlite"):
            with sqlite3.connect(make_url(self.ledger).database or "", timeout=30) as conn:
                return int(conn.execute(sql).fetchone()[0])
        url = make_url(self.ledger).set(drivername="postgresql")
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()


async def work_with_one_killed(
    tmp_path: Path, server: FakeServer, ledger: str, workers: int, kind: str
) -> None:
    """`workers` processes over 400 jobs, one SIGKILLed midway; check nothing is done twice."""
    server.set_faults(latency_ms=80, latency_jitter_ms=30)
    (tmp_path / "p.txt").write_text("".join(f"worker prompt {i}\n" for i in range(400)))
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompts: p.txt\n",
        # the cap is the account's, shared by the processes: four places each
        extra=f"limits:\n  concurrency: {4 * workers}\noutput:\n  dir: {tmp_path / 'out'}\n",
    )
    await plan_saved(manifest, ledger, tmp_path)
    if kind == "worker":
        command = ("worker", "--ledger", ledger, "--lease", "3", "--quiet")
    else:
        command = ("run", str(manifest), "--ledger", ledger, "--lease", "3", "--quiet")
    processes = [await start(*command, cwd=tmp_path) for _ in range(workers)]
    query = Query(ledger)
    await server.state.wait_until(lambda s: s.stats()["billed"] >= 100, timeout_s=60)
    victim = processes[0]
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    victim_in_flight = await query.one(
        "SELECT count(*) FROM attempts a JOIN runs r ON a.run_id = r.id "
        f"WHERE r.pid = {victim.pid} AND a.ended_at IS NULL AND a.sent"
    )
    for process in processes[1:]:
        code, _out, err = await finish(process, limit_s=120)
        assert code == 0, err
    assert await query.one("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 400
    # completed once: one recorded answer and one image per job
    assert await query.one("SELECT count(*) FROM attempts WHERE http_status = 200") == 400
    assert await query.one("SELECT count(*) FROM images WHERE state = 'downloaded'") == 400
    assert await query.one("SELECT count(DISTINCT run_id) FROM attempts WHERE http_status = 200") >= 2
    stats = server.state.stats()
    assert stats["duplicate_billed"] <= victim_in_flight
    assert stats["billed"] == 400 + stats["duplicate_billed"]
    assert await query.one("SELECT count(*) FROM attempts WHERE in_doubt") == victim_in_flight
    # the processes together never had more in flight than the account's cap
    assert stats["max_inflight_images"] <= 4 * workers


@PG
async def test_four_workers_on_postgres_one_killed(tmp_path: Path, server: FakeServer, pg_url: str) -> None:
    """Four `ideobatch worker` processes on PostgreSQL, one SIGKILLed: all 400 jobs done exactly once."""
    await work_with_one_killed(tmp_path, server, pg_url, 4, "worker")


async def test_three_runs_on_one_sqlite_file_one_killed(tmp_path: Path, server: FakeServer) -> None:
    """Three `ideobatch run` processes on one SQLite file, one SIGKILLed: all 400 jobs done exactly once."""
    await work_with_one_killed(tmp_path, server, f"sqlite:///{tmp_path}/ledger.db", 3, "run")


@PG
async def test_workers_share_one_budget(tmp_path: Path, server: FakeServer, pg_url: str) -> None:
    """Three workers on PostgreSQL with a $1.00 budget at $0.08 a job: 12 jobs in all, never more."""
    server.set_faults(latency_ms=50)
    prompts = ", ".join(f"shared budget {i}" for i in range(40))
    manifest = manifest_for(
        tmp_path,
        server,
        f"  - op: generate\n    model: V_2\n    prompts: [{prompts}]\n",
        extra="limits:\n  concurrency: 8\n",
    )
    await plan_saved(manifest, pg_url, tmp_path, "--budget", "1.00")
    results = await asyncio.gather(
        *[ideobatch("worker", "--ledger", pg_url, "--quiet", cwd=tmp_path) for _ in range(3)]
    )
    assert [code for code, _o, _e in results] == [3, 3, 3]
    assert all("budget reached" in err for _c, _o, err in results)
    assert server.state.stats()["billed"] == 12
    _code, out, _ = await ideobatch("status", "acc", "--ledger", pg_url, "--json", cwd=tmp_path)
    status = json.loads(out)
    assert status["spend_usd"] == pytest.approx(0.96)
    assert status["jobs"]["succeeded"] == 12


@PG
async def test_one_worker_serves_every_manifest_and_a_waiting_one_holds_none_back(
    tmp_path: Path, server: FakeServer, pg_url: str
) -> None:
    """Manifest A's jobs all wait out a 30 s Retry-After: one worker finishes B's 100 jobs meanwhile."""
    async with FakeServer(FaultConfig(api_key=API_KEY, rate_429=1.0, retry_after_s=30)) as refusing:
        waiting = manifest_for(
            tmp_path,
            refusing,
            "  - op: generate\n    prompts: [a, b, c, d]\n",
            name="waits",
            extra=f"output:\n  dir: {tmp_path / 'out-a'}\n",
        )
        (tmp_path / "p.txt").write_text("".join(f"busy prompt {i}\n" for i in range(100)))
        busy = manifest_for(
            tmp_path,
            server,
            "  - op: generate\n    prompts: p.txt\n",
            name="busy",
            extra=f"limits:\n  concurrency: 8\noutput:\n  dir: {tmp_path / 'out-b'}\n",
        )
        await plan_saved(waiting, pg_url, tmp_path)
        await plan_saved(busy, pg_url, tmp_path)
        # real retry waits: the Retry-After of 30 s is honoured
        worker = await start(
            "worker", "--ledger", pg_url, "--quiet", cwd=tmp_path, env={"IDEOBATCH_TESTING_WAIT_SCALE": "1"}
        )
        query = Query(pg_url)
        done_sql = (
            "SELECT count(*) FROM jobs JOIN manifests ON manifests.id = jobs.manifest_id "
            "WHERE manifests.name = 'busy' AND jobs.state = 'succeeded'"
        )
        # well under the 30 s the other manifest's jobs wait (a worker serving the manifests one
        # after the other would not start on this one before them)
        for _ in range(200):
            if await query.one(done_sql) == 100:
                break
            await asyncio.sleep(0.1)
        assert await query.one(done_sql) == 100
        assert worker.returncode is None, "the worker waits for the other manifest's jobs"
        worker.send_signal(signal.SIGTERM)
        code, _out, err = await finish(worker)
    assert code == 3, err
    assert "Traceback" not in err
    assert refusing.state.stats()["billed"] == 0
    assert server.state.stats()["billed"] == 100
    waiting_pending = await query.one(
        "SELECT count(*) FROM jobs JOIN manifests ON manifests.id = jobs.manifest_id "
        "WHERE manifests.name = 'waits' AND jobs.state = 'pending'"
    )
    assert waiting_pending == 4
