"""A paid answer that arrives after its job's lease was taken over is recorded, never thrown away.

A run whose process stalls (SIGSTOP here: an event loop that stops, a
machine that sleeps) while its call is in flight loses its lease; when it
resumes, its answer has been paid for. Before the fix the answer was dropped
("its lease was taken by another worker") and the job paid for again.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

from pipeline.fake_server import FakeServer
from pipeline.ledger.repository import opened_ledger
from tests.acceptance.conftest import finish, ideobatch, manifest_for, start


def one(folder: Path, sql: str) -> int:
    with sqlite3.connect(folder / "ledger.db", timeout=30) as conn:
        return int(conn.execute(sql).fetchone()[0])


async def stalled_after_its_call(
    tmp_path: Path, server: FakeServer
) -> tuple[asyncio.subprocess.Process, Path]:
    """A run (lease 1 s) stopped while its one call is in flight; the call then answered and billed."""
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompts: [a lighthouse in fog]\n",
        extra=f"output:\n  dir: {tmp_path / 'out'}\n",
    )
    server.state.hold()
    stalled = await start("run", str(manifest), "--ledger", ledger_of(tmp_path), "--lease", "1", cwd=tmp_path)
    await server.state.wait_until(lambda s: s.inflight_images == 1, timeout_s=30)
    await stop_outside_a_transaction(stalled, tmp_path)
    server.state.release()
    await server.state.wait_until(lambda s: s.stats()["billed"] == 1, timeout_s=30)
    return stalled, manifest


async def stop_outside_a_transaction(process: asyncio.subprocess.Process, folder: Path) -> None:
    """SIGSTOP ``process``, at a moment it holds no write lock on the SQLite ledger (it renews
    its lease every third of a second: stopped inside that transaction, it would block the others)."""
    for _ in range(100):
        process.send_signal(signal.SIGSTOP)
        try:
            with sqlite3.connect(folder / "ledger.db", timeout=0.5, isolation_level=None) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # stopped holding the lock: let it go on, try again
            process.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.05)
    raise AssertionError("the run never let go of the ledger's write lock")


def ledger_of(folder: Path) -> str:
    return f"sqlite:///{folder}/ledger.db"


def assert_every_paid_answer_counted(folder: Path, server: FakeServer, answers: int) -> None:
    stats = server.state.stats()
    assert stats["billed"] == answers
    assert one(folder, "SELECT spent_micros FROM manifests") == round(stats["billed_usd"] * 1_000_000)
    assert one(folder, "SELECT sum(cost_micros) FROM jobs") == round(stats["billed_usd"] * 1_000_000)
    assert one(folder, "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 1
    assert one(folder, "SELECT count(*) FROM attempts WHERE http_status = 200") == answers
    # each answer was recorded: none of its attempts is left "in doubt"
    assert one(folder, "SELECT count(*) FROM attempts WHERE in_doubt") == 0
    assert one(folder, "SELECT count(*) FROM images WHERE state = 'downloaded'") == answers
    assert one(folder, "SELECT count(DISTINCT local_path) FROM images") == answers
    assert len(list((folder / "out").rglob("*.png"))) == answers


async def test_an_answer_paid_after_another_run_took_the_job_over_is_kept_and_counted(
    tmp_path: Path, server: FakeServer
) -> None:
    """Both runs paid for the job: both answers are recorded, spend is what the server billed."""
    stalled, manifest = await stalled_after_its_call(tmp_path, server)
    try:
        # another run waits out the stalled run's lease, takes the job over and pays for it
        code, _out, err = await ideobatch(
            "run", str(manifest), "--ledger", ledger_of(tmp_path), "--lease", "1", "--quiet", cwd=tmp_path
        )
        assert code == 0, err
        assert server.state.stats()["billed"] == 2
    finally:
        stalled.send_signal(signal.SIGCONT)
    code, _out, err = await finish(stalled)
    assert code == 0, err
    assert "taken by another worker" not in err
    assert_every_paid_answer_counted(tmp_path, server, answers=2)


async def test_an_answer_paid_after_its_lease_expired_finishes_the_job_without_paying_again(
    tmp_path: Path, server: FakeServer
) -> None:
    """The job went back to pending meanwhile: the late answer finishes it, nobody pays again."""
    stalled, _manifest = await stalled_after_its_call(tmp_path, server)
    try:
        async with opened_ledger(ledger_of(tmp_path)) as ledger:
            # as another worker's reclaim does once the lease has run out
            assert await ledger.reclaim_expired(now=time.time() + 60) == 1
    finally:
        stalled.send_signal(signal.SIGCONT)
    code, _out, err = await finish(stalled)
    assert code == 0, err
    assert_every_paid_answer_counted(tmp_path, server, answers=1)
