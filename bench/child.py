"""One side of a side-by-side point, in a process of its own: `ideobatch run` in-process, or the naive script.

    python bench/child.py runner URL JOBS CONCURRENCY [--loop asyncio|uvloop]
    python bench/child.py naive URL JOBS CONCURRENCY

Prints one JSON line: jobs, seconds (the run itself: the naive script's
timing, the runner's summary ``duration_s``), ``run_s`` (the runner's whole
`run_manifest`, ledger and planning included) and the CPU seconds this
process used for it (imports excluded, threads included). Each side gets its
own process and event loop, so that the runner's choice of loop (uvloop)
never speeds up the naive script, which stays plain asyncio + aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def cpu_seconds() -> float:
    """CPU seconds of this process so far (user + system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def runner(url: str, jobs: int, concurrency: int) -> dict[str, Any]:
    from common import run_generate_jobs

    cpu, started = cpu_seconds(), time.perf_counter()
    summary = await run_generate_jobs(url, jobs, concurrency)
    return {
        "seconds": float(summary["duration_s"]),
        "run_s": time.perf_counter() - started,
        "cpu_s": cpu_seconds() - cpu,
    }


async def naive(url: str, jobs: int, concurrency: int) -> dict[str, Any]:
    from common import KEY
    from naive_baseline import naive_run

    with tempfile.TemporaryDirectory() as tmp:
        cpu = cpu_seconds()
        seconds = await naive_run(url, KEY, jobs, concurrency, Path(tmp))
        return {"seconds": seconds, "run_s": seconds, "cpu_s": cpu_seconds() - cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["runner", "naive"])
    parser.add_argument("url")
    parser.add_argument("jobs", type=int)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.side == "naive":
        result = asyncio.run(naive(args.url, args.jobs, args.concurrency))
    else:
        import pipeline.running  # noqa: F401  (imports outside the measured CPU, as for the naive side)

        work = runner(args.url, args.jobs, args.concurrency)
        if args.loop == "uvloop":  # measured against asyncio's loop (docs/performance.md)
            import uvloop

            result = uvloop.run(work)
        else:
            result = asyncio.run(work)
    print(json.dumps({"side": args.side, "loop": args.loop, "jobs": args.jobs, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
