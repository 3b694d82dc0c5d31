"""One account's cap on images in flight: many workers sharing it, and one process set above it (SPEC §11).

    python bench/account_cap.py [--quick] [--before DIR [--rounds 3]]

(a) 1, 2 and 3 `ideobatch worker` processes on one PostgreSQL ledger, each
    manifest's `concurrency: 10`, against a fake server that admits 10 images
    in flight (more get 429) with 200 ms latency: 600 jobs.
(b) one `ideobatch run` with `concurrency: 60` against a server capped at 20,
    200 ms: 2,000 jobs.

Printed side by side, from one run: wall time, the ratio to the ideal
(cap ÷ latency), 429s, extra requests (requests beyond one per job), the
most images the server saw in flight, and failed jobs. The fake server runs
in its own process, as do the workers. The PostgreSQL server is the one at
``IDEOBATCH_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
where a database is created and dropped.

``--before DIR`` instead runs (a) with 1 and 3 workers for the ``pipeline``
package found in DIR (``PYTHONPATH=DIR``; e.g. ``git archive REV pipeline
migrations | tar -x -C DIR``) and for this checkout, alternating (ABBA), ``--rounds``
times each, and prints each round and the medians side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from common import KEY, spawn

LATENCY_MS = 200
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


async def fake_server(cap: int) -> tuple[asyncio.subprocess.Process, str]:
    """The fake server in its own process, capped at ``cap`` images in flight, 200 ms fixed latency."""
    process = await spawn(
        "fake-server", "--port", "0", "--api-key", KEY, "--latency", str(LATENCY_MS),
        "--latency-dist", "fixed", "--rate-limit", str(cap), "--retry-after", "none", stderr=None,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    url = line.split("listening on ", 1)[1].split()[0]
    return process, url


def stats(url: str) -> dict[str, Any]:
    """The fake server's counters, and when its first and last calls were answered."""
    with urllib.request.urlopen(f"{url}/_stats", timeout=10) as response:
        counters = dict(json.loads(response.read()))
    with urllib.request.urlopen(f"{url}/_log", timeout=30) as response:
        log = json.loads(response.read())
    entries = log["entries"] if isinstance(log, dict) else log
    times = [entry["time"] for entry in entries]
    counters["busy_s"] = max(times) - min(times) + LATENCY_MS / 1000 if times else 0.0
    return counters


def manifest(folder: Path, url: str, jobs: int, concurrency: int) -> Path:
    """A manifest of ``jobs`` distinct one-image generates."""
    (folder / "p.txt").write_text("".join(f"cap bench {i}\n" for i in range(jobs)))
    path = folder / "cap.yaml"
    path.write_text(
        f"version: 1\nname: cap\nprovider: {{kind: crazyrouter, base_url: '{url}'}}\n"
        f"limits: {{concurrency: {concurrency}}}\noutput: {{dir: '{folder / 'out'}'}}\n"
        "retry: {attempts: 6, initial: 200ms, max: 2s}\n"
        "jobs:\n  - {op: generate, prompts: p.txt, model: V_2_TURBO}\n"
    )
    return path


async def workers_sharing(workers: int, jobs: int, cap: int) -> dict[str, Any]:
    """``workers`` worker processes on one fresh PostgreSQL ledger; the figures of the run."""
    name = f"ideobatch_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    ledger = PG.rsplit("/", 1)[0] + f"/{name}"
    server, url = await fake_server(cap)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = manifest(Path(tmp), url, jobs, cap)
            setup = (("db", "upgrade", "--ledger", ledger), ("plan", str(path), "--save", "--ledger", ledger))
            for args in setup:
                done = await spawn(*args)
                await done.communicate()
            started = time.monotonic()
            cpu_before = children_cpu_s()
            procs = [
                await spawn("worker", "--ledger", ledger, "--quiet", real_waits=True) for _ in range(workers)
            ]
            codes = [(await p.communicate(), p.returncode)[1] for p in procs]
            wall = time.monotonic() - started
            return figures(stats(url), jobs, cap, wall, codes, children_cpu_s() - cpu_before)
    finally:
        server.terminate()
        await server.wait()
        admin = await asyncpg.connect(PG)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def one_above_the_cap(jobs: int, concurrency: int, cap: int) -> dict[str, Any]:
    """One run set to ``concurrency`` against a server that admits ``cap``; the figures of the run."""
    server, url = await fake_server(cap)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = manifest(Path(tmp), url, jobs, concurrency)
            started = time.monotonic()
            run = await spawn(
                "run", str(path), "--ledger", f"sqlite:///{tmp}/ledger.db", "--quiet", real_waits=True
            )
            await run.communicate()
            wall = time.monotonic() - started
            return figures(stats(url), jobs, cap, wall, [run.returncode or 0])
    finally:
        server.terminate()
        await server.wait()


def children_cpu_s() -> float:
    """CPU seconds (user and system) of this process's children that have ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def figures(
    server: dict[str, Any], jobs: int, cap: int, wall: float, codes: list[int], cpu_s: float | None = None
) -> dict[str, Any]:
    """What a run came to, against the ideal of ``cap`` ÷ latency (``cpu_s``: the workers' CPU)."""
    ideal = jobs / (cap / (LATENCY_MS / 1000))
    rejected = int(server["by_status"].get("429", 0))
    return {
        "wall_s": round(wall, 2),
        "ratio": round(ideal / wall, 3),
        # from the first call to the last: the pool's pace, without the processes' start and end
        "ratio_while_calling": round(ideal / server["busy_s"], 3),
        "429s": rejected,
        "extra_requests": round((server["requests"] - jobs) / jobs, 3),
        "max_in_flight": server["max_inflight_images"],
        "billed": server["billed"],
        "exit_codes": codes,
        **({"workers_cpu_s": round(cpu_s, 2)} if cpu_s is not None else {}),
    }


async def before_and_after(before: str, rounds: int, jobs: int) -> None:
    """(a) with 1 and 3 workers, DIR's pipeline and this checkout's alternating; medians side by side."""
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_ in range(1, rounds + 1):
        order = (("before", before), ("after", None))
        # ABBA: neither side always runs first (the machine's load drifts)
        for label, path in order if round_ % 2 else order[::-1]:
            for workers in (1, 3):
                if path is not None:
                    os.environ["PYTHONPATH"] = path
                try:
                    row = await workers_sharing(workers, jobs, 10)
                finally:
                    os.environ.pop("PYTHONPATH", None)
                rows.setdefault((label, workers), []).append(row)
                print(f"  round {round_}, {label}, {workers} worker(s): {row}")
    for label in ("before", "after"):
        for workers in (1, 3):
            each = rows[(label, workers)]
            keys = ("wall_s", "ratio", "ratio_while_calling", "workers_cpu_s")
            medians = {key: statistics.median(r[key] for r in each) for key in keys}
            print(
                f"{label}, {workers} worker(s), median of {len(each)}: wall {medians['wall_s']:.2f} s, "
                f"ratio {medians['ratio']:.3f}, while calling {medians['ratio_while_calling']:.3f}, "
                f"workers' CPU {medians['workers_cpu_s']:.2f} s"
            )
        one, three = rows[(label, 1)], rows[(label, 3)]
        speed = statistics.median(a["wall_s"] for a in one) / statistics.median(b["wall_s"] for b in three)
        print(f"{label}: 3 workers vs 1: {speed:.2f}x the speed")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a third of the jobs")
    parser.add_argument("--before", default=None, help="this folder's pipeline (PYTHONPATH) against ours")
    parser.add_argument("--rounds", type=int, default=3, help="with --before: rounds of each")
    args = parser.parse_args()
    scale = 3 if args.quick else 1
    if args.before:
        print(f"(a) before ({args.before}) and after, a cap of 10 at {LATENCY_MS} ms, {600 // scale} jobs")
        await before_and_after(args.before, args.rounds, 600 // scale)
        return
    print(f"(a) workers sharing a cap of 10 at {LATENCY_MS} ms, {600 // scale} jobs")
    rows = {}
    for workers in (1, 2, 3):
        rows[workers] = await workers_sharing(workers, 600 // scale, 10)
        print(f"  {workers} worker(s): {rows[workers]}")
    print(f"  3 workers vs 1: {rows[1]['wall_s'] / rows[3]['wall_s']:.2f}x the speed")
    print(f"(b) one process, concurrency 60 against a cap of 20 at {LATENCY_MS} ms, {2000 // scale} jobs")
    print(f"  {await one_above_the_cap(2000 // scale, 60, 20)}")


if __name__ == "__main__":
    asyncio.run(main())
