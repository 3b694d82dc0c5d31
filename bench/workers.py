"""Cooperative workers on PostgreSQL: jobs/s with 1, 2 and 4 `ideobatch worker` processes.

    python bench/workers.py [--jobs 2000] [--latency-ms 0] [--concurrency 8]

A fresh PostgreSQL database (IDEOBATCH_TEST_PG, default the local server),
the fake server in a subprocess, and for each worker count a manifest of
`--jobs` generate jobs saved with `plan --save`, then N workers started at once.
Throughput is measured in the ledger — first attempt to last completion — so
process start-up is not counted. Prints jobs/s and the scaling ratio to one worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
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


async def measure(ledger: str, name: str) -> tuple[int, float]:
    url = make_url(ledger).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, max(j.finished_at) - min(a.started_at) AS seconds FROM jobs j "
            "JOIN manifests m ON m.id = j.manifest_id JOIN attempts a ON a.job_id = j.id "
            "WHERE m.name = $1 AND j.state = 'succeeded'",
            name,
        )
        jobs = await conn.fetchval(
            "SELECT count(*) FROM jobs j JOIN manifests m ON m.id = j.manifest_id "
            "WHERE m.name = $1 AND j.state = 'succeeded'",
            name,
        )
        return int(jobs), float(row["seconds"])
    finally:
        await conn.close()


async def run_workers(
    ledger: str, url: str, folder: Path, workers: int, jobs: int, concurrency: int
) -> float:
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


async def bench(jobs: int, latency_ms: float, concurrency: int, counts: list[int]) -> dict[int, float]:
    """Jobs/s per worker count (PostgreSQL ledger, fake server at ``latency_ms``)."""
    database = f"ideobatch_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    ledger = make_url(ADMIN).set(database=database).render_as_string(hide_password=False)
    server, url = await start_server(latency_ms)
    rates: dict[int, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            await done(await cli("db", "upgrade", "--ledger", ledger, cwd=folder))
            for count in counts:
                rates[count] = await run_workers(ledger, url, folder, count, jobs, concurrency)
                print(
                    f"{count} worker(s): {rates[count]:7.1f} jobs/s  (x{rates[count] / rates[counts[0]]:.2f})"
                )
    finally:
        server.terminate()
        await server.wait()
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await admin.close()
    return rates


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rates = await bench(args.jobs, args.latency_ms, args.concurrency, [1, 2, 4])
    print(f"scaling 1 -> 2 workers: x{rates[2] / rates[1]:.2f}; 1 -> 4 workers: x{rates[4] / rates[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
