"""`ideobatch demo`: the fake server in-process, `jobs/demo.yaml` against it, and where to look."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.gallery import build_gallery
from pipeline.running import RunOptions, run_manifest
from pipeline.summary import render_text

DEMO_KEY = "demo-key-not-secret"


def demo_manifest() -> Path:
    """`jobs/demo.yaml` of the source tree, or the copy an installed package carries."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "jobs" / "demo.yaml", here / "demo_jobs" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise UsageError("the demo manifest (jobs/demo.yaml) is missing from this installation")


async def run_demo(folder: str, *, quiet: bool = False) -> tuple[int, list[str]]:
    """Run the demo into ``folder``; returns the exit code and lines to print."""
    os.makedirs(folder, exist_ok=True)
    manifest = demo_manifest()
    config = FaultConfig(
        api_key=DEMO_KEY, latency_ms=150, latency_jitter_ms=100, rate_429=0.05, rate_5xx=0.03
    )
    async with FakeServer(config) as server:
        os.environ["CRAZYROUTER_API_KEY"] = DEMO_KEY
        code, summary = await run_manifest(
            RunOptions(
                manifest=str(manifest),
                ledger_url=f"sqlite:///{folder}/ledger.db",
                out_dir=os.path.join(folder, "images"),
                quiet=quiet,
                base_url=server.url,
            )
        )
        stats = server.state.stats()
    page, _pictures, _failed = await build_gallery(
        f"sqlite:///{folder}/ledger.db", "demo", os.path.join(folder, "gallery.html")
    )
    lines = [
        render_text(summary),
        "",
        f"fake server: {stats['requests']} requests, {stats['billed']} billed",
        f"images:  {os.path.join(folder, 'images')}",
        f"gallery: {page}",
        f"ledger:  sqlite:///{folder}/ledger.db  (try: ideobatch status demo --ledger sqlite:///{folder}/ledger.db)",
    ]
    return code, lines
