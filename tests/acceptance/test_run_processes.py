"""`ideobatch run --processes N`: one command, N processes on one ledger, one summary, signals forwarded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import asyncpg
import psutil

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import finish, manifest_for, start


def jobs_body(count: int) -> str:
    """``count`` generate jobs with prompts of their own (p0, p1, ...)."""
    return f"  - {{op: generate, prompts: [{', '.join(f'p{i}' for i in range(count))}]}}\n"


def run_parts_in(folder: Path) -> list[int]:
    """Pids of `run-part` processes working in ``folder``."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if "run-part" in (process.info["cmdline"] or []) and Path(process.cwd()) == folder:
                found.append(process.info["pid"])
    return found


def requests_per_prompt(server: FakeServer) -> Counter[str]:
    """How many calls the fake server got for each prompt."""
    return Counter(entry.fields["prompt"] for entry in server.state.log if entry.fields)


async def ledger_runs(url: str) -> list[tuple[str, str | None]]:
    """(kind, outcome) of every run the ledger recorded (SQLite or PostgreSQL)."""
    if url.startswith("sqlite"):
        file = Path(url.removeprefix("sqlite:///"))
        if not file.exists():
            return []  # not made yet (a connection here must not make it)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=10)) as db:
                return [(r[0], r[1]) for r in db.execute("SELECT kind, outcome FROM runs ORDER BY id")]
        except sqlite3.OperationalError:
            return []  # its tables are being made

    conn = await asyncpg.connect(url)
    try:
        return [(r[0], r[1]) for r in await conn.fetch("SELECT kind, outcome FROM runs ORDER BY id")]
    finally:
        await conn.close()


async def test_two_processes_do_every_job_once_with_one_summary(
    tmp_path: Path, server: FakeServer, ledger_url: str
) -> None:
    """--processes 2: every job done once (one request each), by two processes, one JSON summary."""
    server.set_faults(latency_ms=30, latency_dist="fixed")
    jobs = 120
    manifest = manifest_for(tmp_path, server, jobs_body(jobs), extra="limits:\n  concurrency: 6\n")
    process = await start(
        "run", str(manifest), "--ledger", ledger_url, "--processes", "2", "--json", cwd=tmp_path
    )
    code, out, err = await finish(process, limit_s=60)
    assert code == 0, err
    [line] = out.splitlines()  # one summary
    summary = json.loads(line)
    assert summary["jobs"]["succeeded"] == jobs
    assert summary["run"]["succeeded"] == jobs  # this run's figures: both processes'
    assert requests_per_prompt(server) == Counter({f"p{i}": 1 for i in range(jobs)})
    assert await ledger_runs(ledger_url) == [("run", "finished"), ("run", "finished")]
    assert "Traceback" not in err, err


async def test_two_processes_keep_under_the_accounts_cap(tmp_path: Path, server: FakeServer) -> None:
    """The cap on images in flight is the account's: two processes together never pass it (no 429)."""
    server.set_faults(latency_ms=60, latency_dist="fixed", inflight_limit=4)
    jobs = 60
    manifest = manifest_for(tmp_path, server, jobs_body(jobs), extra="limits:\n  concurrency: 4\n")
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    process = await start(
        "run", str(manifest), "--ledger", ledger, "--processes", "2", "--json", cwd=tmp_path
    )
    code, _out, err = await finish(process, limit_s=60)
    assert code == 0, err
    stats = server.state.stats()
    assert stats["by_status"] == {"200": jobs}
    assert stats["max_inflight_images"] <= 4
    assert len(await ledger_runs(ledger)) == 2


async def test_ctrl_c_drains_every_process_and_a_resume_finishes_without_duplicates(
    tmp_path: Path, server: FakeServer
) -> None:
    """SIGINT to the command: both processes finish their calls in flight and stop; a resume does the rest."""
    server.set_faults(latency_ms=400, latency_dist="fixed")
    jobs = 60
    manifest = manifest_for(tmp_path, server, jobs_body(jobs), extra="limits:\n  concurrency: 6\n")
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    args = ("run", str(manifest), "--ledger", ledger, "--processes", "2", "--json")
    process = await start(*args, cwd=tmp_path)
    # both processes have calls in flight (the second one's runs row exists once it claims)
    await server.state.wait_until(lambda s: s.stats()["inflight_images"] >= 6, timeout_s=30)
    for _ in range(600):
        if len(await ledger_runs(ledger)) == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert len(run_parts_in(tmp_path)) == 1
    process.send_signal(signal.SIGINT)
    code, out, err = await finish(process, limit_s=30)
    assert code == 3, err
    summary = json.loads(out)
    assert summary["jobs"]["running"] == 0
    assert summary["in_doubt"] == 0  # drained: every call sent was answered and recorded
    assert 0 < summary["jobs"]["succeeded"] < jobs
    assert await ledger_runs(ledger) == [("run", "interrupted"), ("run", "interrupted")]
    assert run_parts_in(tmp_path) == []
    assert "resume with" in err
    server.set_faults(latency_ms=0)
    code, out, err = await finish(await start(*args, cwd=tmp_path), limit_s=60)
    assert code == 0, err
    assert json.loads(out)["jobs"]["succeeded"] == jobs
    assert requests_per_prompt(server) == Counter({f"p{i}": 1 for i in range(jobs)})


async def test_a_second_ctrl_c_cancels_the_calls_of_every_process(tmp_path: Path, server: FakeServer) -> None:
    """SIGINT twice to the command: every process cancels its calls; their jobs stay pending, in doubt."""
    server.set_faults(latency_ms=20_000, latency_dist="fixed")
    manifest = manifest_for(tmp_path, server, jobs_body(20), extra="limits:\n  concurrency: 6\n")
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    process = await start(
        "run", str(manifest), "--ledger", ledger, "--processes", "2", "--json", "--quiet", cwd=tmp_path
    )
    for _ in range(600):  # the second process has joined in
        if len(await ledger_runs(ledger)) == 2:
            break
        await asyncio.sleep(0.05)
    await server.state.wait_until(lambda s: s.stats()["inflight_images"] >= 6, timeout_s=30)
    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.3)
    process.send_signal(signal.SIGINT)
    code, out, err = await finish(process, limit_s=15)
    assert code == 3, err
    summary = json.loads(out)
    assert (summary["jobs"]["pending"], summary["jobs"]["running"], summary["jobs"]["succeeded"]) == (
        20,
        0,
        0,
    )
    assert summary["in_doubt"] == 6  # the calls in flight, in both processes
    assert await ledger_runs(ledger) == [("run", "interrupted"), ("run", "interrupted")]


async def test_max_jobs_is_refused_with_processes(tmp_path: Path, server: FakeServer) -> None:
    """--max-jobs counts one process's claims: with --processes it is a usage error, nothing sent."""
    manifest = manifest_for(tmp_path, server, jobs_body(3))
    process = await start("run", str(manifest), "--processes", "2", "--max-jobs", "1", cwd=tmp_path)
    code, _out, err = await finish(process)
    assert code == 2
    assert "--max-jobs" in err
    assert "Traceback" not in err
    assert server.state.log == []


async def test_the_other_processes_drain_when_the_command_is_killed(
    tmp_path: Path, server: FakeServer
) -> None:
    """SIGKILL to the command: its other process finishes its calls and stops; a resume does the rest."""
    server.set_faults(latency_ms=300, latency_dist="fixed")
    jobs = 60
    manifest = manifest_for(tmp_path, server, jobs_body(jobs), extra="limits:\n  concurrency: 6\n")
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    args = ("run", str(manifest), "--ledger", ledger, "--processes", "2", "--json")
    process = await start(*args, cwd=tmp_path)
    for _ in range(600):
        if len(await ledger_runs(ledger)) == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    process.kill()
    await process.wait()
    for _ in range(200):  # the other process notices, drains and records how it ended
        if ("run", "interrupted") in await ledger_runs(ledger):
            break
        await asyncio.sleep(0.05)
    killed, other = await ledger_runs(ledger)
    assert killed in (("run", None), ("run", "crashed"))  # the other may have seen it die
    assert other == ("run", "interrupted")
    server.set_faults(latency_ms=0)
    code, out, err = await finish(await start(*args, cwd=tmp_path), limit_s=60)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["jobs"]["succeeded"] == jobs
    # re-sent: only the killed process's calls in flight, each counted in doubt; an attempt
    # recorded in the instant before its request left (the kill between the two) is in doubt
    # without a re-send: at most the calls the killed process had (its 6 places)
    resent = sum(count - 1 for count in requests_per_prompt(server).values())
    assert resent <= summary["in_doubt"] <= resent + 6
    assert set(requests_per_prompt(server)) == {f"p{i}" for i in range(jobs)}


async def test_a_manifest_error_found_while_planning_ends_every_process(
    tmp_path: Path, server: FakeServer
) -> None:
    """A bad prompts row (found when the plan validates): exit 2, file:line, the other process ends too."""
    (tmp_path / "rows.csv").write_text("prompt,seed\na cat,11\na dog,abc\n")
    manifest = manifest_for(tmp_path, server, "  - {op: generate, prompts: rows.csv}\n")
    process = await start("run", str(manifest), "--processes", "3", cwd=tmp_path)
    code, _out, err = await finish(process, limit_s=30)
    assert code == 2, err
    assert "rows.csv:3: seed" in err
    assert "Traceback" not in err
    assert server.state.log == []
    assert run_parts_in(tmp_path) == []  # none left behind (they would run in the test's folder)
