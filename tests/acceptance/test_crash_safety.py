"""Crash safety: SIGKILL at random moments, two-stage shutdown, a kill during downloads (SPEC §6)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import sqlite3
from pathlib import Path

from PIL import Image

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import finish, ideobatch, manifest_for, start, status_json, succeeded

KILL_SEED = 20261125


def ledger_file(folder: Path) -> str:
    return f"sqlite:///{folder}/ledger.db"


def unanswered_attempts(folder: Path) -> int:
    """Requests recorded as sent with no outcome: what a resume must count in doubt."""
    with sqlite3.connect(folder / "ledger.db", timeout=10) as conn:
        return int(
            conn.execute("SELECT count(*) FROM attempts WHERE sent AND ended_at IS NULL").fetchone()[0]
        )


def check_outputs(folder: Path) -> int:
    """Every downloaded image exists with its recorded sha256; no temporary file is left."""
    with sqlite3.connect(folder / "ledger.db") as conn:
        rows = conn.execute("SELECT local_path, sha256 FROM images WHERE state = 'downloaded'").fetchall()
    for path, sha in rows:
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha, path
    leftovers = [p for p in (folder / "out").rglob("*") if p.name.startswith(".ideobatch-")]
    assert leftovers == []
    return len(rows)


async def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, server: FakeServer) -> None:
    """Ten SIGKILLs of a 300-job run of legacy and V3 ops, then a resume: all done, re-sends only in doubt."""
    rnd = random.Random(KILL_SEED)
    server.set_faults(latency_ms=60, latency_jitter_ms=40, download_latency_ms=5)
    body = (
        "  - op: generate\n    prompts: prompts.txt\n    num_images: 1\n"
        "  - op: v3-generate\n    prompts: prompts.txt\n    rendering_speed: TURBO\n"
        # a multipart upload of three streamed files per call
        "  - op: v3-edit\n    prompts: prompts.txt\n    images: [door.png]\n    mask: masks/{stem}.png\n"
        "    style_reference_images: [style.png]\n"
    )
    (tmp_path / "prompts.txt").write_text("".join(f"kill test prompt {i}\n" for i in range(100)))
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (48, 32), (120, 60, 30)).save(tmp_path / "door.png")
    Image.new("L", (48, 32), 0).save(tmp_path / "masks" / "door.png")
    Image.new("RGB", (16, 16), (10, 60, 130)).save(tmp_path / "style.png")
    manifest = manifest_for(tmp_path, server, body, extra="limits:\n  concurrency: 8\n")
    args = (
        "run",
        str(manifest),
        "--ledger",
        ledger_file(tmp_path),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    )
    in_flight_at_kills = 0
    for kill in range(10):
        process = await start(*args, cwd=tmp_path)
        target = succeeded(tmp_path) + rnd.randint(5, 20)
        while succeeded(tmp_path) < target:
            assert process.returncode is None, f"kill {kill}: the run ended early"
            await asyncio.sleep(0.01)
        await asyncio.sleep(rnd.uniform(0, 0.08))  # land anywhere in a call, a download or a commit
        process.send_signal(signal.SIGKILL)
        await process.wait()
        in_flight_at_kills += unanswered_attempts(tmp_path)
    code, out, err = await ideobatch(*args, "--json", cwd=tmp_path, limit_s=120)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 300, "failed": 0, "withdrawn": 0}
    assert check_outputs(tmp_path) == 300
    stats = server.state.stats()
    duplicates = stats["duplicate_billed"]
    assert stats["billed"] == 300 + duplicates
    # re-sent paid requests: at most the jobs in flight (sent, no answer recorded) at the kills
    assert duplicates <= in_flight_at_kills
    status = await status_json(ledger_file(tmp_path), "acc", tmp_path)
    # each of those is counted in doubt; only an attempt recorded in the instant before
    # its request left (the kill landing between the two) is in doubt without a duplicate: at
    # most one group-committed batch of attempt records per kill, a batch being at most the
    # calls in flight (8). On a slow machine a kill caught 11 such in 10 kills.
    assert status["in_doubt"] == in_flight_at_kills
    assert duplicates <= status["in_doubt"] <= duplicates + 10 * 8
    assert summary["in_doubt"] == status["in_doubt"]


async def wait_in_flight(server: FakeServer, count: int) -> None:
    await server.state.wait_until(lambda s: s.stats()["inflight_images"] >= count, timeout_s=30)


async def test_first_signal_finishes_the_calls_in_flight(tmp_path: Path, server: FakeServer) -> None:
    """SIGTERM once: no new claims, in-flight calls complete and are recorded, exit 3."""
    server.set_faults(latency_ms=700, latency_dist="fixed")
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompt: slow\n    repeat: 40\n",
        extra="limits:\n  concurrency: 4\n",
    )
    process = await start(
        "run", str(manifest), "--ledger", ledger_file(tmp_path), "--quiet", "--json", cwd=tmp_path
    )
    await wait_in_flight(server, 4)
    process.send_signal(signal.SIGTERM)
    code, out, err = await finish(process)
    assert code == 3, err
    summary = json.loads(out)
    billed = server.state.stats()["billed"]
    assert billed >= 4
    assert summary["jobs"]["succeeded"] == billed
    assert summary["jobs"]["pending"] == 40 - billed
    assert summary["in_doubt"] == 0
    assert "SIGTERM" in summary["run"]["message"]


async def test_second_signal_cancels_and_leaves_jobs_pending(tmp_path: Path, server: FakeServer) -> None:
    """SIGINT twice: in-flight calls are cancelled, their jobs stay pending and count as in doubt."""
    server.set_faults(latency_ms=20_000, latency_dist="fixed")
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompt: stuck\n    repeat: 10\n",
        extra="limits:\n  concurrency: 3\n",
    )
    process = await start(
        "run", str(manifest), "--ledger", ledger_file(tmp_path), "--quiet", "--json", cwd=tmp_path
    )
    await wait_in_flight(server, 3)
    process.send_signal(signal.SIGINT)
    await asyncio.sleep(0.2)
    process.send_signal(signal.SIGINT)
    code, out, err = await finish(process, limit_s=10)
    assert code == 3, err
    summary = json.loads(out)
    assert summary["jobs"]["pending"] == 10
    assert summary["jobs"]["running"] == 0
    assert summary["in_doubt"] == 3
    assert "Traceback" not in err, err
    assert "unexpected error" not in err, err


async def test_kill_during_downloads_downloads_again_without_paying(
    tmp_path: Path, server: FakeServer
) -> None:
    """A kill while images download: the resume fetches them again and calls the API for nothing."""
    server.set_faults(download_latency_ms=800)
    manifest = manifest_for(
        tmp_path,
        server,
        "  - op: generate\n    prompt: big\n    num_images: 2\n    repeat: 3\n",
        extra="limits:\n  concurrency: 8\n",
    )
    args = (
        "run",
        str(manifest),
        "--ledger",
        ledger_file(tmp_path),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    )
    process = await start(*args, cwd=tmp_path)
    await server.state.wait_until(lambda s: s.stats()["downloads"] >= 6, timeout_s=30)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    assert server.state.stats()["billed"] == 3
    server.set_faults(download_latency_ms=0)
    code, out, err = await ideobatch(*args, "--json", cwd=tmp_path)
    assert code == 0, err
    assert server.state.stats()["billed"] == 3
    assert check_outputs(tmp_path) == 6
    assert json.loads(out)["in_doubt"] == 0


async def test_resume_a_day_later_records_expired_urls_and_retry_regenerates(
    tmp_path: Path, server: FakeServer
) -> None:
    """Expired URLs are recorded `url_expired`; `retry --reason url_expired` pays for new images."""
    server.set_faults(download_latency_ms=800)
    manifest = manifest_for(tmp_path, server, "  - op: generate\n    prompt: late\n    repeat: 2\n")
    ledger = ledger_file(tmp_path)
    args = ("run", str(manifest), "--ledger", ledger, "--out", str(tmp_path / "out"), "--quiet")
    process = await start(*args, cwd=tmp_path)
    await server.state.wait_until(lambda s: s.stats()["downloads"] >= 2, timeout_s=30)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    server.set_faults(download_latency_ms=0, clock_offset_s=2 * 86_400)  # the resume comes two days later
    code, out, err = await ideobatch(*args, "--json", cwd=tmp_path)
    assert code == 1, err
    summary = json.loads(out)
    assert summary["failures"] == {"url_expired": 2}
    assert summary["images"]["expired"] == 2
    assert server.state.stats()["billed"] == 2
    code, out, _ = await ideobatch(
        "retry", "acc", "--reason", "url_expired", "--ledger", ledger, cwd=tmp_path
    )
    assert code == 0
    assert "2 job(s)" in out
    code, out, err = await ideobatch(*args, "--json", cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["jobs"]["succeeded"] == 2
    assert server.state.stats()["billed"] == 4
    assert check_outputs(tmp_path) == 2
