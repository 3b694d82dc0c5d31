"""A ledger or an output folder that cannot be used: exit 5, a message, a summary, never a traceback.

The commands run as subprocesses, as a user or cron runs them. PostgreSQL is
taken away by cutting a relay in front of it (`tests.outage`); SQLite files
are damaged for real; output folders are refused by the file system itself.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import API_KEY, finish, ideobatch, manifest_for, start
from tests.acceptance.test_workers import Query, plan_saved
from tests.outage import Outage

PROMPTS = ", ".join(f"cat {n}" for n in range(40))
BODY = f"  - op: generate\n    prompts: [{PROMPTS}]\n"


def no_traceback(err: str) -> None:
    """What a user reads never holds a Python traceback."""
    assert "Traceback" not in err, err


@pytest.mark.postgres
async def test_postgres_gone_past_ledger_retry_exits_5_and_the_rerun_takes_its_jobs_back_at_once(
    tmp_path: Path, server: FakeServer, outage: Outage
) -> None:
    """Exit 5 with a summary; the re-run finds the dead run's jobs at once (a lease of an hour)."""
    server.set_faults(latency_ms=40)
    manifest = manifest_for(tmp_path, server, BODY, extra="limits:\n  concurrency: 4\n")
    args = ("run", str(manifest), "--ledger", outage.url, "--ledger-retry", "1s", "--lease", "3600")
    process = await start(*args, cwd=tmp_path)
    await server.state.wait_until(lambda s: s.stats()["billed"] >= 8, timeout_s=30)
    # calls held in flight while the ledger goes: their paid answers have nowhere to go but disk
    server.state.hold()
    await server.state.wait_until(lambda s: s.inflight_images >= 4, timeout_s=30)
    await outage.cut()
    server.state.release()
    code, out, err = await finish(process)
    assert code == 5, err
    no_traceback(err)
    assert "did not answer" in out  # the summary says why its counts are the run's own
    assert "kept" in out
    assert ".ideobatch/recovery" in out
    assert "postgresql://postgres@127.0.0.1" in err

    outage.restore()
    code, out, err = await ideobatch(*args, cwd=tmp_path)
    assert code == 0, err
    no_traceback(err)
    stats = server.state.stats()
    assert stats["billed"] == 40
    assert stats["duplicate_billed"] == 0
    assert await Query(outage.url).one("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 40


@pytest.mark.postgres
async def test_a_following_worker_waits_out_an_outage_and_goes_on(
    tmp_path: Path, server: FakeServer, outage: Outage
) -> None:
    """`worker --follow` keeps waiting for PostgreSQL (no exit), then finishes the jobs."""
    server.set_faults(latency_ms=40)
    manifest = manifest_for(tmp_path, server, BODY, extra=f"output:\n  dir: {tmp_path / 'out'}\n")
    await plan_saved(manifest, outage.url, tmp_path)
    worker = await start("worker", "--ledger", outage.url, "--follow", "--quiet", cwd=tmp_path)
    await server.state.wait_until(lambda s: s.stats()["billed"] >= 8, timeout_s=30)
    await outage.cut()
    # still trying to reach the ledger after twice the time a run waits (--ledger-retry 1s)
    await outage.refused_for(2.0)
    assert worker.returncode is None
    outage.restore()
    query = Query(outage.url)
    for _ in range(300):
        if await query.one("SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 40:
            break
        await asyncio.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    code, _out, err = await finish(worker)
    no_traceback(err)
    assert "does not answer" in err
    assert "is back" in err
    assert code in (0, 3), err
    stats = server.state.stats()
    assert stats["billed"] == 40
    assert stats["duplicate_billed"] == 0


def damage(ledger: Path, how: str) -> None:
    """Overwrite a SQLite file's header, or every page after the first, with garbage."""
    data = bytearray(ledger.read_bytes())
    if how == "header":
        data[:100] = b"\xa5" * 100
    else:
        for start_at in range(4096, len(data), 4096):
            data[start_at + 8 : start_at + 4096] = b"\x5a" * (4096 - 8)
    ledger.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["header", "pages"])
async def test_a_damaged_sqlite_ledger_is_exit_5_in_every_command(
    tmp_path: Path, server: FakeServer, how: str
) -> None:
    """Every command on a damaged ledger says which file and what to do, exit 5, no traceback."""
    manifest = manifest_for(tmp_path, server, "  - op: generate\n    prompts: [one, two]\n")
    ledger_file = tmp_path / "ledger.db"
    ledger = f"sqlite:///{ledger_file}"
    code, _out, err = await ideobatch("run", str(manifest), "--ledger", ledger, cwd=tmp_path)
    assert code == 0, err
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger_file}{suffix}").unlink(missing_ok=True)
    damage(ledger_file, how)
    # `run` and `worker` as subprocesses, as cron runs them; the others in this process (one each,
    # in a thread with its own event loop): an escaping exception is `result.exception`
    for command in (("run", str(manifest)), ("worker",)):  # they install signal handlers
        code, _out, err = await ideobatch(*command, "--ledger", ledger, cwd=tmp_path)
        assert code == 5, err
        no_traceback(err)
        assert str(ledger_file) in err
    for command in (
        ("plan", str(manifest)),
        ("status", str(manifest)),
        ("export", str(manifest)),
        ("gallery", str(manifest)),
        ("retry", str(manifest), "--failed"),
    ):
        result = await asyncio.to_thread(
            CliRunner().invoke, main, [*command, "--ledger", ledger], env={"CRAZYROUTER_API_KEY": API_KEY}
        )
        assert result.exit_code == 5, (command, result.output)
        assert isinstance(result.exception, SystemExit), (command, result.exception)
        assert str(ledger_file) in result.stderr, (command, result.stderr)
        assert "damaged" in result.stderr or "not a database" in result.stderr, (command, result.stderr)


async def test_an_output_folder_the_file_system_refuses_is_exit_5_and_nothing_is_paid_twice(
    tmp_path: Path, server: FakeServer
) -> None:
    """A folder name too long for the file system: exit 5, summary, no traceback; then all done."""
    manifest = manifest_for(tmp_path, server, "  - op: generate\n    prompts: [one, two, three]\n")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    refused = tmp_path / ("x" * 300) / "out"
    code, out, err = await ideobatch(
        "run", str(manifest), "--ledger", ledger, "--out", str(refused), cwd=tmp_path
    )
    assert code == 5, err
    no_traceback(err)
    assert "File name too long" in out + err
    assert "this run:" in out  # the summary is printed
    code, out, err = await ideobatch(
        "run", str(manifest), "--ledger", ledger, "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    assert code == 0, err
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3
    stats = server.state.stats()
    assert stats["billed"] == 3
    assert stats["duplicate_billed"] == 0
