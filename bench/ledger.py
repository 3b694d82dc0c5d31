"""Ledger throughput: planning a million jobs, and the claim → attempt → complete loop.

(a) Plans PLAN_JOBS generated jobs (real requests, real job keys, streamed from a
    generator) into a fresh SQLite ledger: jobs/s and the process's peak RSS.
(b) On each backend (a fresh SQLite file, a fresh PostgreSQL database), plans
    LOOP_JOBS jobs, then WORKERS concurrent claimers (asyncio tasks, each with
    its own `Ledger` and so its own connection pool) claim BATCH jobs at a time,
    record an attempt for each and complete them with a one-image response and
    its download, in batches, until none is left: jobs/s.

    python bench/ledger.py [--plan-jobs 1000000] [--loop-jobs 20000] [--workers 4]
                           [--batch 50] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
                           [--no-pg] [--profile DIR]

Each figure is printed next to its target with PASS or FAIL; the exit code is
the number of failed targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
from sqlalchemy import make_url

from pipeline.expand import PlannedJob
from pipeline.keys import job_key
from pipeline.ledger.records import ClaimedJob, Completion, Response
from pipeline.ledger.repository import Ledger
from pipeline.pricing import DEFAULT_PRICES
from pipeline.results import IMAGE_DOWNLOADED, ApiResult, DownloadOutcome, GeneratedImage

PLAN_JOBS = 1_000_000
PLAN_TARGET_JOBS_S = 20_000
PLAN_TARGET_RSS_MB = 300
LOOP_JOBS = 20_000
LOOP_TARGET_JOBS_S = 2_000
WORKERS = 4
BATCH = 50
LEASE_S = 300.0
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

SUBJECTS = (
    "a lighthouse on a basalt cliff",
    "a night market in the rain",
    "an astronaut tending a rooftop garden",
    "a fox asleep in a library",
    "a glass greenhouse in the snow",
    "a tram crossing a bridge at dawn",
    "a cathedral made of coral",
    "a desert caravan under two moons",
)
MOODS = ("at golden hour", "in thick fog", "under neon signs", "in watercolor", "as a linocut print")
STYLES = ("REALISTIC", "DESIGN", "ANIME", "GENERAL")
ASPECTS = ("ASPECT_16_9", "ASPECT_1_1", "ASPECT_9_16", "ASPECT_4_3")
MODELS = ("V_2", "V_2_TURBO", "V_2A")


# --- workload ----------------------------------------------------------------------------


def planned_jobs(count: int, tag: str = "") -> Iterator[PlannedJob]:
    """``count`` distinct generate jobs as a manifest with a prompt list × matrix would expand.

    Two entries (stages) share the work, so ranks interleave as in a real plan.
    """
    combos = itertools.cycle(list(itertools.product(SUBJECTS, MOODS, STYLES, ASPECTS, MODELS)))
    for i, (subject, mood, style, aspect, model) in zip(range(count), combos, strict=False):
        request = {
            "prompt": f"{subject} {mood}, variation {i}{tag}",
            "model": model,
            "aspect_ratio": aspect,
            "style_type": style,
            "magic_prompt_option": "AUTO",
            "num_images": 1,
        }
        yield PlannedJob(
            key=job_key("generate", request, None, 0),
            op="generate",
            request=request,
            stage=str(i % 2),
            rank=i // 2,
            replica=0,
            model=model,
            num_images=1,
            cost_usd=DEFAULT_PRICES.job_cost("generate", model, 1),
        )


def completion_of(job: ClaimedJob, attempt_id: int | None) -> Completion:
    """A finished job: a one-image answer and its download, recorded in one write-back."""
    seed = 1_000 + job.id
    result = ApiResult(
        images=(
            GeneratedImage(
                index=0,
                url=f"https://ideogram.example/ephemeral/{job.key[:16]}.png",
                prompt=f"{job.prompt}, cinematic lighting, highly detailed",
                resolution="1312x736",
                seed=seed,
                is_image_safe=True,
                style_type=job.request.get("style_type"),
            ),
        )
    )
    cost = int(DEFAULT_PRICES.job_cost(job.op, job.model, 1) * 1_000_000)
    download = DownloadOutcome(
        index=0,
        state=IMAGE_DOWNLOADED,
        path=f"out/bench/generate/{job.key[:12]}-{seed}.png",
        sha256=job.key,
        bytes=48_213,
        width=1312,
        height=736,
    )
    return Completion(job.id, downloads=[download], response=Response(job.id, attempt_id, result, cost))


# --- databases ---------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.asynccontextmanager
async def fresh_pg(base: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one measurement, dropped afterwards."""
    server = make_url(base).set(drivername="postgresql")
    name = f"ideobatch_bench_{uuid.uuid4().hex[:10]}"
    admin_url = server.render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()


# --- measurements ----------------------------------------------------------------------------------


async def bench_plan(url: str, count: int) -> tuple[float, float]:
    """Plan ``count`` jobs into the ledger at ``url``: (jobs/s, peak RSS in MB)."""
    ledger = await Ledger.open(url)
    try:
        record = await ledger.save_manifest(
            name="bench-plan", sha256="0" * 64, path=None, base_dir=".", config={}, budget_micros=None
        )
        started = time.perf_counter()
        counts = await ledger.plan_jobs(record.id, planned_jobs(count))
        elapsed = time.perf_counter() - started
    finally:
        await ledger.close()
    assert counts.new == count, counts
    return count / elapsed, peak_rss_mb()


async def work(url: str, manifest_id: int, owner: str, batch: int) -> int:
    """One claimer: claim, record attempts, complete, until nothing is left; returns jobs done."""
    ledger = await Ledger.open(url, upgrade=False)
    done = 0
    try:
        while jobs := (await ledger.claim_jobs(manifest_id, owner, batch, LEASE_S)).jobs:
            attempts = await ledger.record_attempts(owner, None, [j.id for j in jobs])
            completed = await ledger.complete_jobs(
                owner, [completion_of(j, attempts.get(j.id)) for j in jobs]
            )
            assert len(completed) == len(jobs), "a lease was lost in the benchmark"
            done += len(completed)
    finally:
        await ledger.close()
    return done


async def bench_loop(url: str, count: int, workers: int, batch: int) -> float:
    """Plan ``count`` jobs, then drain them with ``workers`` concurrent claimers: jobs/s."""
    ledger = await Ledger.open(url, upgrade=True)
    try:
        record = await ledger.save_manifest(
            name="bench-loop", sha256="1" * 64, path=None, base_dir=".", config={}, budget_micros=None
        )
        await ledger.plan_jobs(record.id, planned_jobs(count, tag=" (loop)"))
        started = time.perf_counter()
        done = await asyncio.gather(*(work(url, record.id, f"bench-{i}", batch) for i in range(workers)))
        elapsed = time.perf_counter() - started
        status = await ledger.status(record.id)
    finally:
        await ledger.close()
    assert sum(done) == count, (done, count)
    assert status.jobs == {"succeeded": count}, status.jobs
    return count / elapsed


# --- report -------------------------------------------------------------------------------------------


class Report:
    """Figures against targets, one line each."""

    def __init__(self) -> None:
        self.failures = 0

    def line(self, what: str, value: float, unit: str, target: float, higher_is_better: bool = True) -> None:
        ok = value >= target if higher_is_better else value <= target
        self.failures += not ok
        sign = ">=" if higher_is_better else "<"
        print(
            f"{what:<44} {value:>12,.0f} {unit:<7} target {sign} {target:>9,} {unit:<7} "
            f"{'PASS' if ok else 'FAIL'}",
            flush=True,
        )


@contextlib.contextmanager
def profiled(directory: str | None, name: str) -> Iterator[None]:
    """Write a pyinstrument HTML profile of the block to ``directory`` (when given)."""
    if directory is None:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        Path(directory).mkdir(parents=True, exist_ok=True)
        target = Path(directory) / f"{name}.html"
        target.write_text(profiler.output_html())
        print(f"  profile: {target}", flush=True)


async def main(args: argparse.Namespace) -> int:
    report = Report()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s); baseline RSS {peak_rss_mb():.0f} MB")
    with tempfile.TemporaryDirectory(prefix="ideobatch-bench-") as tmp:
        if args.plan_jobs:
            with profiled(args.profile, "plan"):
                rate, rss = await bench_plan(f"sqlite:///{tmp}/plan.db", args.plan_jobs)
            report.line(f"(a) plan {args.plan_jobs:,} jobs, SQLite", rate, "jobs/s", PLAN_TARGET_JOBS_S)
            report.line("(a) peak RSS while planning", rss, "MB", PLAN_TARGET_RSS_MB, higher_is_better=False)
        if args.loop_jobs:
            label = f"(b) {args.workers} claimers x {args.batch}, {args.loop_jobs:,} jobs"
            with profiled(args.profile, "loop-sqlite"):
                rate = await bench_loop(f"sqlite:///{tmp}/loop.db", args.loop_jobs, args.workers, args.batch)
            report.line(f"{label}, SQLite", rate, "jobs/s", LOOP_TARGET_JOBS_S)
            if not args.no_pg:
                async with fresh_pg(args.pg) as url:
                    with profiled(args.profile, "loop-postgres"):
                        rate = await bench_loop(url, args.loop_jobs, args.workers, args.batch)
                report.line(f"{label}, PostgreSQL", rate, "jobs/s", LOOP_TARGET_JOBS_S)
    return report.failures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan-jobs", type=int, default=PLAN_JOBS, help="jobs to plan in (a); 0 skips it")
    parser.add_argument("--loop-jobs", type=int, default=LOOP_JOBS, help="jobs to work in (b); 0 skips it")
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--pg", default=os.environ.get("IDEOBATCH_TEST_PG", DEFAULT_PG))
    parser.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL loop")
    parser.add_argument("--profile", metavar="DIR", help="write pyinstrument profiles here")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
