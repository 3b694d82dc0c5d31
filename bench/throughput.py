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
import re
import sys
import tempfile
import time
from pathlib import Path

from pipeline.running import RunOptions, run_manifest

TARGET_RATIO = 0.90
KEY = "bench-key"
LISTENING = re.compile(r"listening on (http://\S+)")


async def start_server(latency_ms: float) -> tuple[asyncio.subprocess.Process, str]:
    """`ideobatch fake-server` in a subprocess, and its URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline.cli",
        "fake-server",
        "--port",
        "0",
        "--api-key",
        KEY,
        "--latency",
        str(latency_ms),
        "--latency-dist",
        "fixed",
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = LISTENING.search(line)
    if match is None:
        process.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return process, match.group(1)


async def one_point(url: str, jobs: int, concurrency: int, latency_ms: float) -> tuple[float, float]:
    """Run `jobs` jobs at `concurrency`; returns (jobs/s, ratio to ideal)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = folder / "bench.yaml"
        manifest.write_text(
            f"version: 1\nname: bench-{concurrency}\nprovider: {{kind: crazyrouter}}\n"
            f"limits: {{concurrency: {concurrency}}}\n"
            "jobs:\n  - op: generate\n    prompt: throughput bench\n    model: V_2_TURBO\n"
            f"    repeat: {jobs}\n"
        )
        started = time.perf_counter()
        code, summary = await run_manifest(
            RunOptions(
                str(manifest),
                f"sqlite:///{folder}/ledger.db",
                out_dir=str(folder / "out"),
                quiet=True,
                base_url=url,
            )
        )
        wall = time.perf_counter() - started
    if code != 0 or summary["jobs"]["succeeded"] != jobs:
        raise RuntimeError(f"run failed: exit {code}, {summary['jobs']}")
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
