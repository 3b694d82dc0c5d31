"""Chaos: every fault of the fake server at once, plus SIGKILLs of the runner (SPEC §6)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import signal
import sqlite3
from pathlib import Path

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import ideobatch, manifest_for, start, succeeded

CHAOS_SEED = 4242


async def test_every_fault_at_once_with_kills(tmp_path: Path, server: FakeServer) -> None:
    """All faults at once plus three SIGKILLs: every job ends done, nothing is lost, re-billing is in doubt.

    Faults: 429 in every form and a real in-flight cap, 5xx HTML pages, billed resets, truncated
    bodies, slow, cut and reset downloads, URLs that expire while the runner is down, and every
    response (answers, error pages, images; headers too) written in pieces at random boundaries.
    """
    rnd = random.Random(CHAOS_SEED)
    server.set_faults(
        seed=CHAOS_SEED,
        latency_ms=40,
        latency_jitter_ms=30,
        rate_429=0.15,
        retry_after="mixed",
        inflight_limit=6,
        rate_5xx=0.1,
        rate_reset=0.05,
        rate_truncate=0.05,
        download_latency_ms=30,
        rate_download_truncate=0.05,
        rate_download_reset=0.05,
        split_writes=1.0,
    )
    (tmp_path / "p.txt").write_text("".join(f"chaos prompt {i}\n" for i in range(150)))
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompts: p.txt\n",
        extra="limits:\n  concurrency: 8\nretry:\n  attempts: 30\n",
    )
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    args = ("run", str(manifest), "--ledger", ledger, "--out", str(tmp_path / "out"), "--quiet")
    for kill in range(3):
        process = await start(*args, cwd=tmp_path)
        target = succeeded(tmp_path) + rnd.randint(10, 30)
        while succeeded(tmp_path) < target:
            assert process.returncode is None, f"kill {kill}: the run ended early"
            await asyncio.sleep(0.01)
        await asyncio.sleep(rnd.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        await process.wait()
        if kill == 1:
            server.set_faults(clock_offset_s=2 * 86_400)  # every URL handed out so far has expired
    code, out, err = await ideobatch(*args, "--json", cwd=tmp_path, limit_s=120)
    assert code in (0, 1), err
    regenerated = 0
    if code == 1:
        assert set(json.loads(out)["failures"]) <= {"url_expired"}, out
        code, said, _ = await ideobatch(
            "retry", "acc", "--reason", "url_expired", "--ledger", ledger, cwd=tmp_path
        )
        regenerated = int(re.match(r"(\d+) job", said).group(1))  # type: ignore[union-attr]
        code, out, err = await ideobatch(*args, "--json", cwd=tmp_path, limit_s=120)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 150, "failed": 0, "withdrawn": 0}
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        images = conn.execute("SELECT local_path, sha256 FROM images WHERE state = 'downloaded'").fetchall()
    assert len(images) == 150
    for path, sha in images:
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
    assert not list((tmp_path / "out").rglob(".ideobatch-*"))
    stats = server.state.stats()
    for fault in (
        "rate_429",
        "inflight_limit",
        "5xx",
        "reset",
        "truncate",
        "download_truncate",
        "download_reset",
        "split_writes",
    ):
        assert stats["faults"].get(fault, 0) > 0, (fault, stats["faults"])
    # every request paid twice was counted in doubt (or was an expired job deliberately regenerated)
    assert stats["duplicate_billed"] <= summary["in_doubt"] + regenerated
    assert stats["billed"] == 150 + stats["duplicate_billed"]
