"""`ideobatch serve` on a 100,000-image ledger: how fast the overview and gallery pages answer.

Builds a ledger of IMAGES finished generate jobs (one image each; prompts ×
style × aspect × model, as bench/ledger.py plans them; 2% failed with a
reason; an answered attempt per job; a few hundred picks) on SQLite and, unless
--no-pg, on a fresh PostgreSQL database. The jobs are planned through the
ledger's verbs; their results are filled in with one SQL statement per table
(working 100,000 jobs through the claim loop would only make the build slow).

Then serves it in-process and times each page over HTTP (aiohttp client on
127.0.0.1), after the server's start-up read of the field summary, with the
overview's half-second cache turned off so that every request reads the
ledger. Figures: median and worst of ROUNDS requests per page; the target is
300 ms for the overview and for a gallery page.

    python bench/review.py [--images 100000] [--rounds 20] [--no-pg] [--pg URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ledger import fresh_pg, planned_jobs

from pipeline.ledger.repository import Ledger
from pipeline.review import state as review_state
from pipeline.review.app import create_app
from pipeline.review.state import STATE, ReviewOptions

IMAGES = 100_000
ROUNDS = 20
TARGET_MS = 300.0
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"

#: fill in results for every planned job: succeeded (2% failed), paid, an image, an attempt
FINISH = [
    """UPDATE jobs SET state = CASE WHEN id % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
        error_kind = CASE WHEN id % 100 = 0 THEN 'unsafe' WHEN id % 50 = 0 THEN 'http_400' END,
        error_message = CASE WHEN id % 50 = 0 THEN 'refused by the bench' END,
        cost_micros = CASE WHEN id % 50 = 0 THEN 0 ELSE estimate_micros END,
        attempts = 1, response_at = {now}, finished_at = {now} - (id % 600), updated_at = {now}""",
    """INSERT INTO attempts (job_id, number, started_at, ended_at, sent, http_status, in_doubt)
        SELECT id, 1, {now} - (id % 600) - 1.5 - (id % 7) * 0.3, {now} - (id % 600), TRUE,
               CASE WHEN error_kind = 'unsafe' THEN 422 WHEN error_kind IS NOT NULL THEN 400 ELSE 200 END,
               FALSE
        FROM jobs""",
    """INSERT INTO images (job_id, "index", remote_url, prompt, resolution, seed, is_image_safe, state,
                           local_path, sha256, bytes, width, height)
        SELECT id, 0, NULL, 'bench image ' || id || ', cinematic lighting, highly detailed', '1312x736',
               (id * 7919) % 2147483647, TRUE, 'downloaded',
               '{out}/generate/' || substr(key, 1, 16) || '.png', key, 48213, 1312, 736
        FROM jobs WHERE state = 'succeeded'""",
    """INSERT INTO picks (image_id, verdict, decided_at)
        SELECT id, CASE WHEN id % 3 = 0 THEN 'rejected' ELSE 'picked' END, {now}
        FROM images WHERE id % 200 = 0""",
    "UPDATE manifests SET spent_micros = (SELECT sum(cost_micros) FROM jobs), budget_micros = 10000000000",
]


async def build(url: str, count: int, out: str) -> int:
    """Plan ``count`` jobs into the ledger at ``url`` and finish them; returns the manifest id."""
    ledger = await Ledger.open(url, upgrade=True)
    try:
        record = await ledger.save_manifest(
            name="bench-review",
            sha256="2" * 64,
            path=None,
            base_dir=".",
            config={"output": {"dir": out}},
            budget_micros=None,
        )
        await ledger.plan_jobs(record.id, planned_jobs(count))
    finally:
        await ledger.close()
    statements = [s.format(now=time.time(), out=out) for s in FINISH]
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(make_url(url).database or "") as conn:
            for statement in statements:
                conn.execute(statement)
            conn.execute("ANALYZE")
    else:
        conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        try:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
    return record.id


async def measure(
    url: str, manifest_id: int, count: int, rounds: int, thumbs: str
) -> list[tuple[str, float, float]]:
    """(page, median ms, worst ms) of each page, and the cold field summary's time."""
    review_state.OVERVIEW_TTL_S = 0.0  # every overview request reads the ledger
    ledger = await Ledger.open(url)
    app = create_app(ledger, ReviewOptions(ledger_url=url, thumbs_dir=thumbs))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    results: list[tuple[str, float, float]] = []
    try:
        started = time.perf_counter()
        await app[STATE].fields.summary(manifest_id)  # what the server reads once at start
        results.append(("field summary, once per server (cold)", (time.perf_counter() - started) * 1000, 0.0))
        async with aiohttp.ClientSession() as http:
            first = await (await http.get(f"{base}/m/{manifest_id}")).text()
            assert first.count('class="card') == 48, "the gallery page is not full"
            middle = count // 2
            pages = {
                "overview (/)": "/",
                "overview, polled part (/live)": "/live",
                "gallery, first page": f"/m/{manifest_id}",
                f"gallery, page after image {middle:,}": f"/m/{manifest_id}?after={middle}",
                "gallery, filter on a matrix value": f'/m/{manifest_id}?f.style_type="ANIME"',
                "gallery, two fields and a pick": (
                    f'/m/{manifest_id}?f.style_type="ANIME"&f.model="V_2A"&pick=picked'
                ),
                "gallery, prompt text (every job read)": f"/m/{manifest_id}?prompt=lighthouse",
                "image detail": f"/m/{manifest_id}/images/{middle}",
                "failures": f"/m/{manifest_id}/failures",
                "/metrics": "/metrics",
            }
            for label, path in pages.items():
                times = []
                for attempt in range(rounds + 2):
                    started = time.perf_counter()
                    async with http.get(base + path) as response:
                        await response.read()
                        assert response.status == 200, (path, response.status)
                    if attempt >= 2:  # two warm-up requests (connections, SQLite page cache)
                        times.append((time.perf_counter() - started) * 1000)
                results.append((label, statistics.median(times), max(times)))
    finally:
        await runner.cleanup()
        await ledger.close()
    return results


def report(backend: str, results: list[tuple[str, float, float]]) -> int:
    """Print the figures; returns how many target pages missed 300 ms (median)."""
    failures = 0
    print(f"\n{backend}")
    for label, median, worst in results:
        target = label.startswith(("overview (/)", "gallery, first page", "gallery, page after"))
        verdict = ""
        if target:
            ok = median < TARGET_MS
            failures += not ok
            verdict = f"target < {TARGET_MS:.0f} ms {'PASS' if ok else 'FAIL'}"
        worst_text = f"worst {worst:7.1f} ms" if worst else ""
        print(f"  {label:<42} {median:8.1f} ms   {worst_text:<17} {verdict}", flush=True)
    return failures


async def main(args: argparse.Namespace) -> int:
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s); {args.images:,} images")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="ideobatch-bench-review-") as tmp:
        url = f"sqlite:///{tmp}/review.db"
        started = time.perf_counter()
        manifest_id = await build(url, args.images, f"{tmp}/out")
        print(f"built the SQLite ledger in {time.perf_counter() - started:.1f} s")
        failures += report(
            "SQLite", await measure(url, manifest_id, args.images, args.rounds, f"{tmp}/thumbs")
        )
        if not args.no_pg:
            async with fresh_pg(args.pg) as pg:
                started = time.perf_counter()
                manifest_id = await build(pg, args.images, f"{tmp}/out")
                print(f"\nbuilt the PostgreSQL ledger in {time.perf_counter() - started:.1f} s")
                results = await measure(pg, manifest_id, args.images, args.rounds, f"{tmp}/thumbs")
                failures += report("PostgreSQL", results)
    return failures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--pg", default=os.environ.get("IDEOBATCH_TEST_PG", DEFAULT_PG))
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
