"""The ledger goes away mid-run: waited out within `ledger_retry`, exit 5 past it, nothing paid twice.

PostgreSQL is taken away for real by cutting a relay in front of it
(`tests.outage`); SQLite's disk fills up for real (a page limit that SQLite
itself enforces with SQLITE_FULL). Each test checks what a user would: the
exit code, the summary, the fake server's bill, and a re-run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Engine, event, make_url

from pipeline.fake_server import FakeServer
from pipeline.ledger.repository import Ledger
from pipeline.recovery import RECOVERY_DIR
from tests.integration.conftest import run, write_manifest
from tests.outage import Outage

PROMPTS = ", ".join(f"fox {n}" for n in range(40))


def forty_jobs(folder: Path, extra: str = "") -> Path:
    """A manifest of 40 distinct generate jobs, 4 in flight."""
    return write_manifest(
        folder,
        f"- op: generate\n  prompts: [{PROMPTS}]\n",
        extra="limits:\n  concurrency: 4\n" + extra,
    )


def billed(server: FakeServer) -> int:
    """Calls the fake server has billed."""
    return int(server.state.stats()["billed"])


async def terminate_backends(url: str) -> None:
    """End every connection to the database of ``url``, as a restart or an idle timeout would."""
    target = make_url(url)
    admin_url = target.set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            target.database,
        )
    finally:
        await admin.close()
    assert killed >= 1


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_run_waits_out_ten_seconds_without_postgres_and_finishes(
    tmp_path: Path, fake_server: FakeServer, outage: Outage
) -> None:
    """PostgreSQL gone for 10 s mid-run: the same run finishes every job, each billed once."""
    fake_server.set_faults(latency_ms=40)
    manifest = forty_jobs(tmp_path)
    task = asyncio.create_task(run(manifest, fake_server, tmp_path, ledger_url=outage.url))
    await fake_server.state.wait_until(lambda s: s.stats()["billed"] >= 8, timeout_s=30)
    await outage.cut()
    asyncio.get_running_loop().call_later(10.0, outage.restore)
    code, summary = await asyncio.wait_for(task, 60)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 40
    assert summary["images"]["downloaded"] == 40
    assert billed(fake_server) == 40
    assert fake_server.state.stats()["duplicate_billed"] == 0


@pytest.fixture
def full_sqlite_disk() -> Iterator[dict[str, int | None]]:
    """Every SQLite connection opened meanwhile gets at most ``limit["pages"]`` pages (None: no cap).

    SQLite answers a write past ``max_page_count`` with SQLITE_FULL, "database
    or disk is full": the real error of a full file system.
    """
    limit: dict[str, int | None] = {"pages": None}

    def cap(dbapi_connection: Any, _record: Any) -> None:
        if limit["pages"] is not None and type(dbapi_connection).__module__.startswith("sqlite3"):
            dbapi_connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    event.listen(Engine, "connect", cap)
    try:
        yield limit
    finally:
        event.remove(Engine, "connect", cap)


@pytest.mark.postgres
async def test_a_run_whose_postgres_connections_are_killed_finishes_without_paying_twice(
    tmp_path: Path, fake_server: FakeServer, pg_url: str
) -> None:
    """The server ends every connection of the run twice (a restart, an admin, a pooler's idle
    timeout): the pooled connections it holds are dead, and the run carries on with new ones."""
    fake_server.set_faults(latency_ms=40)
    manifest = forty_jobs(tmp_path)
    task = asyncio.create_task(run(manifest, fake_server, tmp_path, ledger_url=pg_url))
    for at_least in (8, 20):
        await fake_server.state.wait_until(lambda s, n=at_least: s.stats()["billed"] >= n, timeout_s=30)
        await terminate_backends(pg_url)
    code, summary = await asyncio.wait_for(task, 60)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 40
    assert billed(fake_server) == 40
    assert fake_server.state.stats()["duplicate_billed"] == 0


@pytest.mark.postgres
async def test_connections_the_server_closed_while_idle_are_replaced_without_a_word(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A pooler's or the server's idle timeout ends the pooled connections: the next verbs run on
    new ones at once, with no "the ledger does not answer" in the log (it is not an outage)."""
    ledger = await Ledger.open(pg_url, upgrade=False)
    try:
        await asyncio.gather(*(ledger.pending_work(None) for _ in range(4)))  # connections pooled
        await terminate_backends(pg_url)
        with caplog.at_level(logging.WARNING, logger="ideobatch"):
            for _ in range(6):
                assert await ledger.pending_work(None) == (0, 0, None)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        await ledger.close()


async def test_a_full_disk_under_the_sqlite_ledger_exits_5_and_a_rerun_finishes(
    tmp_path: Path, fake_server: FakeServer, full_sqlite_disk: dict[str, int | None]
) -> None:
    """SQLite's file system full: exit 5 with a summary and kept answers; with room again, all done."""
    manifest = forty_jobs(tmp_path, extra="retry:\n  ledger_retry: 500ms\n")
    # plan first (without a cap), so the cap falls on the run's own writes
    code, _summary = await run(manifest, fake_server, tmp_path, max_jobs=1)
    assert code == 0
    pages = (tmp_path / "ledger.db").stat().st_size // 4096
    full_sqlite_disk["pages"] = pages + 2
    # a short lease: this test's runs share one pid, so the next run cannot tell this one is dead
    code, summary = await run(manifest, fake_server, tmp_path, lease_s=1)
    assert code == 5, summary
    assert summary["run"]["stop_reason"] == "ledger"
    assert "database or disk is full" in summary["run"]["message"]
    assert summary["run"]["kept_answers"]

    full_sqlite_disk["pages"] = None
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 40
    assert billed(fake_server) == 40
    assert fake_server.state.stats()["duplicate_billed"] == 0


async def test_kept_answers_are_recorded_before_anything_is_claimed(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A kept answer file is taken into the ledger on the next run: its job is not called again."""
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [one, two]\n")
    code, summary = await run(manifest, fake_server, tmp_path, max_jobs=1)
    assert code == 0
    first_images = sorted((tmp_path / "out").rglob("*.png"))
    assert len(first_images) == 1
    # forge the situation of a run whose ledger went away: move job one's answer to a file
    import sqlite3

    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        key, request = conn.execute("SELECT key, request FROM jobs WHERE state = 'succeeded'").fetchone()
        image = conn.execute(
            "SELECT remote_url, prompt, resolution, seed, local_path, sha256, bytes, width, height "
            "FROM images JOIN jobs ON jobs.id = images.job_id WHERE jobs.key = ?",
            (key,),
        ).fetchone()
        conn.execute("DELETE FROM images")
        conn.execute(
            "UPDATE jobs SET state = 'pending', response_at = NULL, cost_micros = 0, finished_at = NULL"
        )
        conn.execute("UPDATE manifests SET spent_micros = 0")
    folder = tmp_path / "out" / RECOVERY_DIR
    folder.mkdir()
    kept = {
        "version": 1,
        "manifest": "t",
        "job_key": key,
        "attempt_id": None,
        "cost_micros": 80000,
        "result": {
            "images": [
                {
                    "index": 0,
                    "url": image[0],
                    "prompt": image[1],
                    "resolution": image[2],
                    "seed": image[3],
                    "is_image_safe": True,
                    "style_type": None,
                }
            ],
            "descriptions": [],
            "created": None,
        },
        "downloads": [
            {
                "index": 0,
                "state": "downloaded",
                "path": image[4],
                "sha256": image[5],
                "bytes": image[6],
                "width": image[7],
                "height": image[8],
                "error": None,
            }
        ],
    }
    (folder / f"t-{key}.json").write_text(json.dumps(kept))
    before = billed(fake_server)
    downloads_before = fake_server.state.stats()["downloads"]
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 2
    assert summary["spend_usd"] == pytest.approx(0.16)
    assert billed(fake_server) == before + 1  # job two only
    assert fake_server.state.stats()["downloads"] == downloads_before + 1  # job one's image was on disk
    assert not list(folder.glob("*.json"))
    assert json.loads(request)["prompt"] in ("one", "two")


async def test_an_output_folder_that_turns_unusable_mid_run_stops_it_with_exit_5(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """The images' folder replaced by a file mid-run: exit 5, answers kept in the ledger, no re-pay."""
    fake_server.set_faults(latency_ms=20)
    manifest = forty_jobs(tmp_path)
    folder = tmp_path / "out" / "generate"
    task = asyncio.create_task(run(manifest, fake_server, tmp_path))
    await fake_server.state.wait_until(lambda s: s.downloads_served >= 6, timeout_s=30)
    folder.rename(tmp_path / "moved-away")
    folder.write_text("not a folder")
    code, summary = await asyncio.wait_for(task, 60)
    assert code == 5, summary
    assert summary["run"]["stop_reason"] == "output"
    assert str(folder) in summary["run"]["message"]

    folder.unlink()
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 40
    assert billed(fake_server) == 40
    assert fake_server.state.stats()["duplicate_billed"] == 0
