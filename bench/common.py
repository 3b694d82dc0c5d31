"""What the benchmarks share: the fake server in a subprocess, and `ideobatch` as a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

#: the key every benchmark's fake server accepts (and puts in the environment of the runs)
KEY = "bench-key"
LISTENING = re.compile(r"listening on (http://\S+)")


async def start_server(latency_ms: float = 0) -> tuple[asyncio.subprocess.Process, str]:
    """`ideobatch fake-server` in a subprocess (its own core) with a fixed latency, and its URL."""
    process = await spawn(
        "fake-server",
        "--port",
        "0",
        "--api-key",
        KEY,
        "--latency",
        str(latency_ms),
        "--latency-dist",
        "fixed",
        stderr=None,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = LISTENING.search(line)
    if match is None:
        process.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return process, match.group(1)


async def spawn(
    *args: str, cwd: Path | None = None, real_waits: bool = False, **streams: Any
) -> asyncio.subprocess.Process:
    """Start `ideobatch ARGS` with the benchmark key (stdout/stderr piped by default).

    Retries wait nothing unless ``real_waits`` (a benchmark of 429s needs the backoff a user gets).
    """
    env = dict(os.environ, CRAZYROUTER_API_KEY=KEY, IDEOBATCH_TESTING_WAIT_SCALE="1" if real_waits else "0")
    options: dict[str, Any] = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
    options.update(streams)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.cli", *args, cwd=cwd, env=env, **options
    )


def write_generate_manifest(folder: Path, jobs: int, concurrency: int) -> Path:
    """``folder/bench.yaml``: ``jobs`` one-image generate jobs at ``concurrency``."""
    manifest = folder / "bench.yaml"
    manifest.write_text(
        f"version: 1\nname: bench\nlimits: {{concurrency: {concurrency}}}\n"
        f"jobs:\n  - {{op: generate, prompt: bench, model: V_2_TURBO, repeat: {jobs}}}\n"
    )
    return manifest


async def run_generate_jobs(url: str, jobs: int, concurrency: int) -> dict[str, Any]:
    """`ideobatch run` in this process: ``jobs`` one-image generate jobs against ``url``.

    A fresh SQLite ledger and output folder; returns the run's summary (and
    raises unless every job succeeded).
    """
    from pipeline.running import RunOptions, run_manifest

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = write_generate_manifest(folder, jobs, concurrency)
        options = RunOptions(
            str(manifest),
            f"sqlite:///{folder}/ledger.db",
            out_dir=str(folder / "out"),
            quiet=True,
            base_url=url,
        )
        code, summary = await run_manifest(options)
    if code != 0 or summary["jobs"]["succeeded"] != jobs:
        raise RuntimeError(f"run failed: exit {code}, {summary['jobs']}")
    return summary
