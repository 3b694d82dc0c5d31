"""Runner throughput against the ideal C/L: 2,000 generate jobs, downloads and ledger included.

    python bench/throughput.py [--jobs 2000] [--latency-ms 200] [--concurrency 20 100]

The fake server runs in a subprocess (its own core) with a fixed latency L;
the runner works through the jobs at concurrency C with a fresh SQLite
ledger. The ideal is C/L jobs per second (every slot always busy); the
ratio measured/ideal must be at least 0.90.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from common import KEY, run_generate_jobs, start_server

TARGET_RATIO = 0.90


async def one_point(url: str, jobs: int, concurrency: int, latency_ms: float) -> tuple[float, float]:
    """Run `jobs` jobs at `concurrency`; returns (jobs/s, ratio to ideal)."""
    started = time.perf_counter()
    summary = await run_generate_jobs(url, jobs, concurrency)
    wall = time.perf_counter() - started
    elapsed = summary["duration_s"]
    rate = jobs / elapsed
    ideal = concurrency / (latency_ms / 1000)
    print(
        f"C={concurrency:<4} L={latency_ms:.0f}ms  {jobs} jobs in {elapsed:.2f}s "
        f"(wall {wall:.2f}s incl. plan)"
        f"  {rate:7.1f} jobs/s  ideal {ideal:6.1f}  ratio {rate / ideal:.3f}"
    )
    return rate, rate / ideal


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[20, 100])
    args = parser.parse_args()
    os.environ["CRAZYROUTER_API_KEY"] = KEY
    server, url = await start_server(args.latency_ms)
    try:
        ratios = [(c, (await one_point(url, args.jobs, c, args.latency_ms))[1]) for c in args.concurrency]
    finally:
        server.terminate()
        await server.wait()
    first_c, first = ratios[0]
    verdict = "PASS" if first >= TARGET_RATIO else "FAIL"
    print(f"ratio at C={first_c}: {first:.3f} (target >= {TARGET_RATIO}) {verdict}")
    return 0 if first >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
