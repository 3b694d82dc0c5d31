"""Scheduled and chained runs as cron would see them: locks, one-line JSON, kills mid-chain."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import finish, ideobatch, manifest_for, start


async def test_second_locked_run_exits_4_at_once(tmp_path: Path, server: FakeServer) -> None:
    """Two `run --lock` on one manifest: the second exits 4 without waiting for the first, which finishes."""
    server.state.hold()  # the first run's calls stay in flight until the second has exited
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompt: nightly\n    repeat: 12\n",
        extra="limits:\n  concurrency: 4\n",
    )
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    first = await start("run", str(manifest), "--ledger", ledger, "--lock", "--quiet", cwd=tmp_path)
    await server.state.wait_until(lambda s: s.stats()["inflight_images"] > 0, timeout_s=30)
    code, _out, err = await ideobatch(
        "run", str(manifest), "--ledger", ledger, "--lock", "--quiet", cwd=tmp_path
    )
    assert code == 4
    assert "another run holds the lock" in err
    assert server.state.stats()["billed"] == 0
    server.state.release()
    code, _out, err = await finish(first)
    assert code == 0, err
    assert server.state.stats()["billed"] == 12


async def test_json_summary_is_one_line_for_logs(tmp_path: Path, server: FakeServer) -> None:
    """`run --json` prints exactly one line of JSON on stdout, logs stay on stderr."""
    manifest = manifest_for(tmp_path, server, "  - op: generate\n    prompt: cron\n")
    code, out, _err = await ideobatch(
        "run", str(manifest), "--ledger", f"sqlite:///{tmp_path}/l.db", "--json", cwd=tmp_path
    )
    assert code == 0
    assert len(out.splitlines()) == 1
    assert json.loads(out)["jobs"]["succeeded"] == 1


async def test_kill_mid_chain_resumes_without_paying_twice(tmp_path: Path, server: FakeServer) -> None:
    """SIGKILL while parents and children run: the resume finishes both stages; re-sends only in doubt."""
    server.set_faults(latency_ms=120, latency_jitter_ms=60)
    prompts = ", ".join(f"chain {i}" for i in range(24))
    manifest = manifest_for(
        tmp_path,
        server,
        f"  - op: generate\n    prompts: [{prompts}]\n    then:\n      - op: upscale\n        detail: 70\n",
        extra="limits:\n  concurrency: 6\n",
    )
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    args = ("run", str(manifest), "--ledger", ledger, "--out", str(tmp_path / "out"), "--quiet")
    process = await start(*args, cwd=tmp_path)
    await server.state.wait_until(lambda s: sum(1 for e in s.log if e.op == "upscale") >= 4, timeout_s=60)
    await asyncio.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        in_flight = conn.execute("SELECT count(*) FROM attempts WHERE sent AND ended_at IS NULL").fetchone()[
            0
        ]
    code, out, err = await ideobatch(*args, "--json", cwd=tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["by_op"]["generate"]["succeeded"] == 24
    assert summary["by_op"]["upscale"]["succeeded"] == 24
    stats = server.state.stats()
    assert stats["duplicate_billed"] <= in_flight
    assert summary["in_doubt"] == in_flight
    assert stats["billed"] == 48 + stats["duplicate_billed"]
