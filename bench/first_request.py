"""Fixed costs of `ideobatch run`: process start to the first request, last image to exit.

    python bench/first_request.py [--jobs 2000] [--runs 5] [--processes 1] [--compare-processes]

The fake server runs in its own process at zero latency. Each run writes a
``--jobs``-job manifest in a fresh folder (a fresh SQLite ledger beside it)
and starts ``ideobatch run`` as a subprocess; the figures are the median over
``--runs`` runs of

- **to first request**: from just before the subprocess is started to the
  first call the fake server logs (its log's time is taken as it answers:
  at zero latency, when the request arrives);
- **last image to exit**: from the newest image file's modification time to
  the subprocess's exit;
- **wall**: process start to exit, and jobs/s over it.

``--compare-processes`` also runs the same manifest with ``--processes 2``
(side by side, alternating) and prints the ratio of jobs/s. ``--before DIR``
also runs, alternating with this checkout, the ``pipeline`` package found in
DIR (``PYTHONPATH=DIR``; e.g. ``git archive main pipeline migrations | tar -x -C DIR``),
so that before and after are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import spawn, start_server


async def server_log(url: str) -> list[dict[str, Any]]:
    """The fake server's log of calls."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_log") as response:
        response.raise_for_status()
        entries: list[dict[str, Any]] = await response.json()
        return entries


async def reset(url: str) -> None:
    """Clear the fake server's log."""
    async with aiohttp.ClientSession() as session, session.post(f"{url}/_reset") as response:
        response.raise_for_status()


async def one_run(
    url: str, jobs: int, concurrency: int, processes: int, pythonpath: str | None = None
) -> dict[str, float]:
    """One `ideobatch run` of ``jobs`` jobs on a fresh ledger: its fixed costs and wall clock."""
    await reset(url)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = folder / "first.yaml"
        manifest.write_text(
            f"version: 1\nname: first\nprovider: {{kind: crazyrouter, base_url: '{url}'}}\n"
            f"limits: {{concurrency: {concurrency}}}\noutput: {{dir: out}}\n"
            f"jobs:\n  - {{op: generate, prompt: first request bench, model: V_2_TURBO, repeat: {jobs}}}\n"
        )
        extra = ("--processes", str(processes)) if processes > 1 else ()
        if pythonpath:
            os.environ["PYTHONPATH"] = pythonpath
        started = time.time()
        try:
            process = await spawn("run", str(manifest), "--quiet", *extra, cwd=folder)
        finally:
            os.environ.pop("PYTHONPATH", None)
        _out, err = await process.communicate()
        ended = time.time()
        if process.returncode != 0:
            raise RuntimeError(f"exit {process.returncode}: {err.decode()[-2000:]}")
        images = [p.stat().st_mtime for p in (folder / "out").rglob("*.png")]
        if len(images) != jobs:
            raise RuntimeError(f"{len(images)} images for {jobs} jobs")
        log = await server_log(url)
    first = min(entry["time"] for entry in log)
    return {
        "first_request_s": first - started,
        "last_image_to_exit_s": ended - max(images),
        "wall_s": ended - started,
        "jobs_per_s": jobs / (ended - started),
        "requests": len(log),
    }


def median(runs: list[dict[str, float]], key: str) -> float:
    """The median of one figure over runs."""
    return statistics.median(run[key] for run in runs)


async def main() -> None:
    """Measure and print the figures (and a JSON line)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--compare-processes", action="store_true", help="also --processes 2, side by side")
    parser.add_argument(
        "--before", default=None, help="also this folder's pipeline (PYTHONPATH), side by side"
    )
    args = parser.parse_args()
    # as an installed package is: byte-compiled (PYTHONDONTWRITEBYTECODE would otherwise make every
    # run compile each module of an editable checkout from source, a tenth of a second or more)
    for folder in (Path(__file__).resolve().parent.parent, *([Path(args.before)] if args.before else [])):
        compileall.compile_dir(folder / "pipeline", quiet=1)
    server, url = await start_server(0)
    results: dict[str, Any] = {}
    try:
        counts = [args.processes] if not args.compare_processes else [1, 2]
        variants: list[tuple[str, int, str | None]] = [(f"processes {n}", n, None) for n in counts]
        if args.before:
            variants.insert(0, ("before", 1, args.before))
        runs: dict[str, list[dict[str, float]]] = {label: [] for label, _n, _path in variants}
        for _ in range(args.runs):
            for label, n, path in variants:
                runs[label].append(await one_run(url, args.jobs, args.concurrency, n, path))
        for label, each in runs.items():
            figures = {
                key: round(median(each, key), 3)
                for key in ("first_request_s", "last_image_to_exit_s", "wall_s", "jobs_per_s")
            }
            results[label.replace(" ", "_")] = {**figures, "runs": each}
            print(
                f"{label}: to first request {figures['first_request_s']:.3f} s, last image to exit "
                f"{figures['last_image_to_exit_s']:.3f} s, wall {figures['wall_s']:.2f} s, "
                f"{figures['jobs_per_s']:.0f} jobs/s (median of {args.runs}, {args.jobs} jobs, "
                f"C = {args.concurrency})"
            )
        if args.compare_processes:
            ratio = results["processes_2"]["jobs_per_s"] / results["processes_1"]["jobs_per_s"]
            results["processes_2_over_1"] = round(ratio, 2)
            print(f"--processes 2 / one process: {ratio:.2f}x (jobs/s, process start to exit)")
    finally:
        server.terminate()
        await server.wait()
    print(json.dumps({key: value for key, value in results.items() if key != "runs"}, default=str)[:2000])


if __name__ == "__main__":
    asyncio.run(main())
