"""Cooperative workers on one ledger: jobs/s with 1, 2 and 4 `ideobatch worker` processes.

    python bench/workers.py [--jobs 2000] [--latency-ms 0] [--concurrency 8] [--sqlite] [--split]

A fresh PostgreSQL database (IDEOBATCH_TEST_PG, default the local server) or,
with ``--sqlite``, a fresh SQLite file; the fake server in a subprocess; and
for each worker count a manifest of `--jobs` generate jobs saved with
`plan --save`, then N workers started at once. Each worker has
``--concurrency`` images in flight, or with ``--split`` its share of them (the
same total in flight whatever the count). Throughput is measured in the
ledger — first attempt to last completion — so process start-up is not
counted. Prints jobs/s and the scaling ratio to one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from common import spawn, start_server
from sqlalchemy import make_url

ADMIN = os.environ.get("IDEOBATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def cli(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await spawn(*args, cwd=cwd)


async def done(process: asyncio.subprocess.Process) -> None:
    _out, err = await process.communicate()
    if process.returncode not in (0,):
        raise RuntimeError(f"exit {process.returncode}: {err.decode()[-2000:]}")


MEASURE = (
    "SELECT count(DISTINCT j.id), max(j.finished_at) - min(a.started_at) FROM jobs j "
    "JOIN manifests m ON m.id = j.manifest_id JOIN attempts a ON a.job_id = j.id "
    "WHERE m.name = {name} AND j.state = 'succeeded'"
)


async def measure(ledger: str, name: str) -> tuple[int, float]:
    """Jobs succeeded, and seconds from the first attempt to the last completion."""
    if ledger.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(ledger.removeprefix("sqlite:///"))) as db:
            jobs, seconds = db.execute(MEASURE.format(name="?"), (name,)).fetchone()
        return int(jobs), float(seconds or 0.0)
    url = make_url(ledger).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(MEASURE.format(name="$1"), name)
        return int(row[0]), float(row[1])
    finally:
        await conn.close()


async def run_workers(
    ledger: str, url: str, folder: Path, workers: int, jobs: int, concurrency: int
) -> float:
    """Plan ``jobs`` jobs, run ``workers`` workers of ``concurrency`` images in flight each: jobs/s."""
    name = f"workers-{workers}-{uuid.uuid4().hex[:6]}"
    manifest = folder / f"{name}.yaml"
    manifest.write_text(
        f"version: 1\nname: {name}\nprovider: {{kind: crazyrouter, base_url: '{url}'}}\n"
        f"limits: {{concurrency: {concurrency}}}\noutput: {{dir: {folder / name}}}\n"
        f"jobs:\n  - {{op: generate, prompt: workers bench, model: V_2_TURBO, repeat: {jobs}}}\n"
    )
    await done(await cli("plan", str(manifest), "--save", "--ledger", ledger, cwd=folder))
    processes = [await cli("worker", "--ledger", ledger, "--quiet", cwd=folder) for _ in range(workers)]
    await asyncio.gather(*(done(p) for p in processes))
    finished, seconds = await measure(ledger, name)
    assert finished == jobs, (finished, jobs)
    return jobs / seconds


async def bench(
    jobs: int,
    latency_ms: float,
    concurrency: int,
    counts: list[int],
    *,
    sqlite: bool = False,
    split: bool = False,
) -> dict[int, float]:
    """Jobs/s per worker count (fake server at ``latency_ms``); ``split``: ``concurrency`` in all."""
    server, url = await start_server(latency_ms)
    rates: dict[int, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            async with fresh_ledger(folder, sqlite) as ledger:
                for count in counts:
                    each = max(1, concurrency // count) if split else concurrency
                    rates[count] = await run_workers(ledger, url, folder, count, jobs, each)
                    print(
                        f"{count} worker(s) x {each} in flight, {'SQLite' if sqlite else 'PostgreSQL'}: "
                        f"{rates[count]:7.1f} jobs/s  (x{rates[count] / rates[counts[0]]:.2f})",
                        flush=True,
                    )
    finally:
        server.terminate()
        await server.wait()
    return rates


@contextlib.asynccontextmanager
async def fresh_ledger(folder: Path, sqlite: bool) -> AsyncIterator[str]:
    """A new SQLite file, or a new PostgreSQL database (dropped afterwards), migrated."""
    if sqlite:
        ledger = f"sqlite:///{folder / 'ledger.db'}"
        await done(await cli("db", "upgrade", "--ledger", ledger, cwd=folder))
        yield ledger
        return
    database = f"ideobatch_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        ledger = make_url(ADMIN).set(database=database).render_as_string(hide_password=False)
        await done(await cli("db", "upgrade", "--ledger", ledger, cwd=folder))
        yield ledger
    finally:
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await admin.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite ledger instead of PostgreSQL")
    parser.add_argument("--split", action="store_true", help="--concurrency in all, shared by the workers")
    args = parser.parse_args()
    rates = await bench(
        args.jobs, args.latency_ms, args.concurrency, [1, 2, 4], sqlite=args.sqlite, split=args.split
    )
    print(f"scaling 1 -> 2 workers: x{rates[2] / rates[1]:.2f}; 1 -> 4 workers: x{rates[4] / rates[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
