"""Every performance figure of docs/performance.md, measured side by side in one run.

    python bench/run_all.py [--quick] [--no-pg] [--out bench/results.json]

1. Throughput against the ideal C/L and against the naive script (bench/naive_baseline.py)
   at C = 10, 50, 200 and L = 50 ms, 500 ms (fake server in a subprocess, SQLite ledger),
   runs of at least 2,000 jobs (SPEC §9), with the CPU each side used: the runner (or the
   naive script) and the fake server share the machine's cores. Each side of a point runs
   in a process of its own (bench/child.py), one after the other against the same server.
2. From process start: `ideobatch run` of 2,000 jobs at C = 20, L = 200 ms, the wall clock
   from starting the command to its exit against the ideal (and the naive script's, started
   the same way).
3. Runner overhead at zero latency: jobs/s and CPU ms per job, beside the naive script's
   (the median of three rounds, each side in its own process; the runner under uvloop too,
   when it is installed).
4. Planning 1,000,000 jobs (`ideobatch plan --save` in a subprocess): jobs/s, peak RSS.
5. A re-run of a finished 100,000-job manifest: seconds until it reports nothing to do.
6. Zero latency on SQLite with the same 50 images in flight shared by 1 and 2 `ideobatch worker`
   processes (one process is bound by its event loop, one core), from bench/workers.py.
7. Workers on PostgreSQL (1, 2, 4), from bench/workers.py.

Results go to bench/results.json and docs/throughput.png (matplotlib).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KEY, spawn, start_server, write_generate_manifest
from workers import bench as workers_bench
from workers import fresh_ledger, run_workers

HERE = Path(__file__).resolve().parent
CONCURRENCY = (10, 50, 200)
LATENCY_MS = (50, 500)


async def set_latency(url: str, latency_ms: float) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/_control", json={"latency_ms": latency_ms, "latency_dist": "fixed"}) as response,
    ):
        response.raise_for_status()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds used by this process (threads included) and by the fake server, between two readings."""

    def __init__(self, server_pid: int) -> None:
        import psutil

        self._server = psutil.Process(server_pid)

    def read(self) -> tuple[float, float]:
        times = self._server.cpu_times()
        return cpu_seconds(), times.user + times.system


async def child(side: str, url: str, jobs: int, concurrency: int, *extra: str) -> dict[str, Any]:
    """One side of a point in a process of its own (bench/child.py): its timing and CPU."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "child.py"),
        side,
        url,
        str(jobs),
        str(concurrency),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, CRAZYROUTER_API_KEY=KEY, IDEOBATCH_TESTING_WAIT_SCALE="0"),
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{side} failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def measured(
    meter: CpuMeter, side: str, url: str, jobs: int, concurrency: int, *extra: str
) -> dict[str, float]:
    """Run one side; jobs/s, and the CPU seconds per 1,000 jobs of it and of the fake server."""
    _own, server_before = meter.read()
    result = await child(side, url, jobs, concurrency, *extra)
    _own, server_after = meter.read()
    own, server = result["cpu_s"], server_after - server_before
    return {
        "jobs_per_s": jobs / result["seconds"],
        "client_cpu_s_per_1000": own / jobs * 1000,
        "server_cpu_s_per_1000": server / jobs * 1000,
        # cores busy on the machine: the client and the fake server together (2.0 = all of them)
        "cores_busy": (own + server) / result["run_s"],
    }


def jobs_for(ideal: float, quick: bool) -> int:
    """Jobs per point: SPEC §9 measures runs of at least 2,000 jobs (--quick: a few seconds' worth)."""
    if quick:
        return int(min(3000, max(200, ideal * 4)))
    return int(max(2000, min(6000, ideal * 8)))


async def throughput_grid(url: str, meter: CpuMeter, quick: bool) -> list[dict[str, Any]]:
    points = []
    for latency in LATENCY_MS:
        await set_latency(url, latency)
        for concurrency in CONCURRENCY:
            ideal = concurrency / (latency / 1000)
            jobs = jobs_for(ideal, quick)
            runner = await measured(meter, "runner", url, jobs, concurrency)
            naive = await measured(meter, "naive", url, jobs, concurrency)
            two = None
            if latency <= TWO_PROCESSES_UP_TO_MS and not quick:
                two = await two_processes(url, jobs, concurrency)
            point = {
                "latency_ms": latency,
                "concurrency": concurrency,
                "jobs": jobs,
                "ideal": ideal,
                "runner": runner["jobs_per_s"],
                "naive": naive["jobs_per_s"],
                "runner_vs_ideal": runner["jobs_per_s"] / ideal,
                "runner_vs_naive": runner["jobs_per_s"] / naive["jobs_per_s"],
                "naive_vs_ideal": naive["jobs_per_s"] / ideal,
                "runner_cpu": runner,
                "naive_cpu": naive,
                # the same images in flight shared by two `ideobatch worker` processes (one ledger)
                "runner_2_processes": two,
            }
            points.append(point)
            print(
                f"L={latency:>3}ms C={concurrency:>3} ({jobs} jobs): runner {point['runner']:7.1f} jobs/s  "
                f"naive {point['naive']:7.1f}  ideal {ideal:7.1f}  "
                f"runner/ideal {point['runner_vs_ideal']:.3f}  "
                f"runner/naive {point['runner_vs_naive']:.3f}  naive/ideal {point['naive_vs_ideal']:.3f}  "
                f"cores busy {runner['cores_busy']:.2f} / {naive['cores_busy']:.2f}"
                + (f"  2 processes {two:7.1f} jobs/s" if two else ""),
                flush=True,
            )
    return points


#: latencies at which one process is bound by its event loop, so two are measured too
TWO_PROCESSES_UP_TO_MS = 50


async def two_processes(url: str, jobs: int, concurrency: int) -> float:
    """Jobs/s of two `ideobatch worker` processes sharing ``concurrency`` images in flight (SQLite)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with fresh_ledger(folder, sqlite=True) as ledger:
            return await run_workers(ledger, url, folder, 2, jobs, max(1, concurrency // 2))


#: the point measured from process start (the issue's: 2,000 jobs, C = 20, L = 200 ms)
FROM_START = {"jobs": 2000, "concurrency": 20, "latency_ms": 200}


async def from_process_start(url: str, quick: bool) -> dict[str, Any]:
    """`ideobatch run` and the naive script as commands: wall clock from start to exit vs the ideal."""
    await set_latency(url, FROM_START["latency_ms"])
    jobs = 500 if quick else FROM_START["jobs"]
    concurrency = FROM_START["concurrency"]
    ideal_s = jobs / (concurrency / (FROM_START["latency_ms"] / 1000))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_generate_manifest(folder, jobs, concurrency)
        ledger = f"sqlite:///{folder}/ledger.db"
        started = time.perf_counter()
        process = await spawn(
            "run",
            str(manifest),
            "--ledger",
            ledger,
            "--out",
            str(folder / "out"),
            "--base-url",
            url,
            "--quiet",
            cwd=folder,
            stdout=asyncio.subprocess.DEVNULL,
        )
        _out, err = await process.communicate()
        runner_s = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(err.decode()[-2000:])
        started = time.perf_counter()
        naive = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "naive_baseline.py"),
            "--url",
            url,
            "--key",
            KEY,
            "--jobs",
            str(jobs),
            "--concurrency",
            str(concurrency),
            stdout=asyncio.subprocess.DEVNULL,
        )
        await naive.wait()
        naive_s = time.perf_counter() - started
    result = {
        **FROM_START,
        "jobs": jobs,
        "ideal_s": ideal_s,
        "runner_s": runner_s,
        "naive_s": naive_s,
        "runner_vs_ideal": ideal_s / runner_s,
        "naive_vs_ideal": ideal_s / naive_s,
    }
    print(
        f"from process start, {jobs} jobs, C={concurrency}, L={FROM_START['latency_ms']}ms: "
        f"ideobatch run {runner_s:.2f}s ({result['runner_vs_ideal']:.3f} of the ideal {ideal_s:.1f}s), "
        f"naive {naive_s:.2f}s ({result['naive_vs_ideal']:.3f})",
        flush=True,
    )
    return result


#: rounds of the zero-latency point (each side in each round; the medians are kept)
ZERO_LATENCY_ROUNDS = 3


def _uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def zero_latency(url: str, meter: CpuMeter, quick: bool) -> dict[str, Any]:
    await set_latency(url, 0)
    jobs = 1000 if quick else 3000
    sides: dict[str, tuple[str, ...]] = {"runner": ("runner",), "naive": ("naive",)}
    if _uvloop_installed():
        sides["runner_uvloop"] = ("runner", "--loop", "uvloop")
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _round in range(1 if quick else ZERO_LATENCY_ROUNDS):
        for name, (side, *extra) in sides.items():
            rounds[name].append(await measured(meter, side, url, jobs, 50, *extra))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[name])

    runner_cpu, naive_cpu = (
        median("runner", "client_cpu_s_per_1000"),
        median("naive", "client_cpu_s_per_1000"),
    )
    result: dict[str, Any] = {
        "jobs": jobs,
        "concurrency": 50,
        "runner_jobs_per_s": median("runner", "jobs_per_s"),
        "naive_jobs_per_s": median("naive", "jobs_per_s"),
        # CPU seconds per 1,000 jobs = CPU ms per job
        "cpu_s_per_1000_jobs": runner_cpu,
        "naive_cpu_s_per_1000_jobs": naive_cpu,
        "runner_vs_naive_cpu": runner_cpu / naive_cpu,
        "rounds": rounds,
    }
    line = (
        f"zero latency (median of {len(rounds['runner'])}): runner {result['runner_jobs_per_s']:.0f} jobs/s, "
        f"{runner_cpu:.2f} CPU ms per job; naive {result['naive_jobs_per_s']:.0f} jobs/s, {naive_cpu:.2f} "
        f"CPU ms per job; runner / naive CPU {result['runner_vs_naive_cpu']:.2f}"
    )
    if "runner_uvloop" in rounds:
        result["uvloop_jobs_per_s"] = median("runner_uvloop", "jobs_per_s")
        result["uvloop_cpu_s_per_1000_jobs"] = median("runner_uvloop", "client_cpu_s_per_1000")
        line += (
            f"; runner under uvloop {result['uvloop_jobs_per_s']:.0f} jobs/s, "
            f"{result['uvloop_cpu_s_per_1000_jobs']:.2f} CPU ms per job"
        )
    print(line, flush=True)
    return result


def big_manifest(folder: Path, jobs: int, name: str) -> Path:
    prompts = 10_000
    repeat = max(1, jobs // (prompts * 20))
    (folder / "prompts.txt").write_text(
        "".join(f"catalog photo {i} of a ceramic mug\n" for i in range(prompts))
    )
    manifest = folder / f"{name}.yaml"
    manifest.write_text(
        f"version: 1\nname: {name}\ndefaults: {{model: V_2_TURBO}}\njobs:\n  - op: generate\n"
        f"    prompts: prompts.txt\n    repeat: {repeat}\n    matrix:\n"
        "      style_type: [REALISTIC, ANIME, DESIGN, RENDER_3D, GENERAL]\n"
        "      aspect_ratio: [ASPECT_1_1, ASPECT_16_9, ASPECT_9_16, ASPECT_4_3]\n"
    )
    return manifest


async def cli(*args: str, cwd: Path) -> tuple[int, float]:
    """Run `ideobatch ARGS`; returns (exit code, seconds)."""
    started = time.perf_counter()
    process = await spawn(*args, cwd=cwd, stdout=asyncio.subprocess.DEVNULL)
    _out, err = await process.communicate()
    if process.returncode not in (0, 1):
        raise RuntimeError(err.decode()[-2000:])
    return process.returncode or 0, time.perf_counter() - started


async def planning(jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = big_manifest(folder, jobs, "plan-bench")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        _code, seconds = await cli(
            "plan", str(manifest), "--save", "--ledger", f"sqlite:///{folder}/l.db", cwd=folder
        )
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "peak_rss_mb": rss_mb,
        "rss_note": "" if rss_mb * 1024 > before else "peak RSS of an earlier child",
    }
    print(
        f"planning {jobs:,} jobs (plan --save, process start included): {jobs / seconds:,.0f} jobs/s, "
        f"peak RSS {rss_mb:.0f} MB",
        flush=True,
    )
    return result


async def finished_rerun(url: str, jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = big_manifest(folder, jobs, "rerun-bench")
        text = manifest.read_text().replace("defaults:", f"provider: {{base_url: '{url}'}}\ndefaults:")
        manifest.write_text(text)
        ledger = f"sqlite:///{folder}/l.db"
        await cli("plan", str(manifest), "--save", "--ledger", ledger, cwd=folder)
        with sqlite3.connect(folder / "l.db") as conn:  # stand-in for a finished run
            conn.execute("UPDATE jobs SET state = 'succeeded', finished_at = 1")
        code, seconds = await cli("run", str(manifest), "--ledger", ledger, "--quiet", cwd=folder)
    print(
        f"re-run of a finished {jobs:,}-job manifest: nothing to do after {seconds:.2f}s (exit {code})",
        flush=True,
    )
    return {"jobs": jobs, "seconds": seconds, "exit": code}


def plot(points: list[dict[str, Any]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(LATENCY_MS), figsize=(11, 4.2), sharey=False)
    for axis, latency in zip(axes, LATENCY_MS, strict=True):
        rows = [p for p in points if p["latency_ms"] == latency]
        xs = [p["concurrency"] for p in rows]
        axis.plot(xs, [p["ideal"] for p in rows], "k--", label="ideal C/L")
        axis.plot(xs, [p["runner"] for p in rows], "o-", label="ideobatch run")
        axis.plot(xs, [p["naive"] for p in rows], "s:", label="naive script")
        if all(p.get("runner_2_processes") for p in rows):
            axis.plot(xs, [p["runner_2_processes"] for p in rows], "^-", label="ideobatch, 2 processes")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.set_title(f"latency {latency} ms")
        axis.set_xlabel("concurrency (images in flight)")
        axis.set_ylabel("jobs per second")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("Throughput against the fake server (2-core machine, SQLite ledger, downloads included)")
    figure.tight_layout()
    figure.savefig(target, dpi=110)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs per point")
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL workers")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    os.environ["CRAZYROUTER_API_KEY"] = KEY
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    server, url = await start_server(0)
    try:
        meter = CpuMeter(server.pid)
        results["throughput"] = await throughput_grid(url, meter, args.quick)
        results["from_process_start"] = await from_process_start(url, args.quick)
        results["zero_latency"] = await zero_latency(url, meter, args.quick)
        results["rerun_finished"] = await finished_rerun(url, 10_000 if args.quick else 100_000)
    finally:
        server.terminate()
        await server.wait()
    results["planning"] = await planning(100_000 if args.quick else 1_000_000)
    # one process is bound by its event loop (one core); the same 50 images in flight
    # shared by two `ideobatch worker` processes on one SQLite ledger use both cores
    print("zero latency, SQLite, 50 images in flight shared by 1 or 2 processes:", flush=True)
    rates = await workers_bench(1000 if args.quick else 6000, 0, 50, [1, 2], sqlite=True, split=True)
    results["zero_latency_processes_sqlite"] = {str(k): v for k, v in rates.items()}
    if not args.no_pg:
        rates = await workers_bench(1000 if args.quick else 2000, 0, 8, [1, 2, 4])
        results["workers_postgres"] = {str(k): v for k, v in rates.items()}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    plot(results["throughput"], HERE.parent / "docs" / "throughput.png")
    print(f"results: {args.out}; plot: docs/throughput.png")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
