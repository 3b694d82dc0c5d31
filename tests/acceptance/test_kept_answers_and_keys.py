"""Paid answers kept while the ledger was away are never paid again; a key that breaks a header.

Found by an adversarial pass over issue 18; each test failed before its fix.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import API_KEY, finish, ideobatch, manifest_for, start
from tests.outage import Outage

PROMPTS = ", ".join(f"owl {n}" for n in range(24))
BODY = f"  - op: generate\n    prompts: [{PROMPTS}]\n"


@pytest.mark.postgres
async def test_a_run_that_outlives_another_does_not_pay_again_for_the_answers_it_kept(
    tmp_path: Path, server: FakeServer, outage: Outage, pg_url: str
) -> None:
    """X (its ledger cut) keeps its answers and exits 5; Y takes X's jobs back after recording them.

    Y, on the same host and ledger, must record X's kept answers before it
    takes X's dead jobs back, not call the API for them again.
    """
    server.set_faults(latency_ms=500)
    manifest = manifest_for(
        tmp_path,
        server,
        BODY,
        # each run its own 4 calls in flight: sharing the account's 4, X might hold none at the cut
        extra=f"limits:\n  concurrency: 4\n  scope: process\noutput:\n  dir: {tmp_path / 'out'}\n",
    )
    x = await start(
        "run", str(manifest), "--ledger", outage.url, "--ledger-retry", "1s", "--quiet", cwd=tmp_path
    )
    await server.state.wait_until(lambda s: len(s.log) >= 4, timeout_s=30)
    # both runs' calls held in flight (4 each) at the cut: X's answers have nowhere to go but disk
    server.state.hold()
    y = await start("run", str(manifest), "--ledger", pg_url, "--quiet", cwd=tmp_path)
    await server.state.wait_until(lambda s: s.inflight_images >= 8, timeout_s=30)
    await outage.cut()
    server.state.release()
    code, out, err = await finish(x)
    assert code == 5, err
    assert "kept" in out
    code, _out, err = await finish(y, 120)
    assert code == 0, err
    stats = server.state.stats()
    assert stats["duplicate_billed"] == 0, stats
    assert stats["billed"] == 24


@pytest.mark.postgres
async def test_a_second_sigint_while_paid_answers_wait_for_the_ledger_keeps_them(
    tmp_path: Path, server: FakeServer, outage: Outage
) -> None:
    """Ctrl-C twice while the ledger is away must not throw paid answers away."""
    server.set_faults(latency_ms=500)
    manifest = manifest_for(
        tmp_path,
        server,
        BODY,
        # each run its own 4 calls in flight: sharing the account's 4, X might hold none at the cut
        extra=f"limits:\n  concurrency: 4\n  scope: process\noutput:\n  dir: {tmp_path / 'out'}\n",
    )
    args = ("run", str(manifest), "--ledger", outage.url, "--quiet")
    x = await start(*args, "--ledger-retry", "10s", cwd=tmp_path)
    await server.state.wait_until(lambda s: len(s.log) >= 4, timeout_s=30)
    await asyncio.sleep(0.3)
    await outage.cut()
    await server.state.wait_until(lambda s: s.stats()["billed"] >= 4, timeout_s=30)
    await asyncio.sleep(0.5)
    x.send_signal(signal.SIGINT)
    await asyncio.sleep(0.5)
    x.send_signal(signal.SIGINT)
    await finish(x, 120)
    outage.restore()
    code, _out, err = await ideobatch(*args, cwd=tmp_path, limit_s=120)
    assert code == 0, err
    stats = server.state.stats()
    assert stats["duplicate_billed"] == 0, stats


@pytest.mark.parametrize("key", [API_KEY[:10] + "\r\n" + API_KEY[10:], API_KEY + "\nX-Other: 1"])
async def test_a_key_with_a_line_break_is_a_usage_error_not_a_traceback(
    tmp_path: Path, server: FakeServer, key: str
) -> None:
    """A key pasted with a line break cannot go in a header: exit 2 before anything is recorded."""
    manifest = manifest_for(tmp_path, server, "  - op: generate\n    prompt: a cat\n")
    code, out, err = await finish(await start("run", str(manifest), cwd=tmp_path, key=key))
    assert code == 2, err
    assert "Traceback" not in err
    assert API_KEY[:8] not in out + err
    assert server.state.stats()["requests"] == 0


async def test_a_key_quoted_back_in_a_paid_answer_is_not_recorded(tmp_path: Path, server: FakeServer) -> None:
    """A proxy that appends the request's Authorization header to the enhanced prompt (a 200)."""
    server.set_faults(response_text_suffix=f" Authorization: Bearer {API_KEY}")
    manifest = manifest_for(tmp_path, server, "  - op: generate\n    prompts: [a cat, a dog]\n")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    code, out, err = await ideobatch("run", str(manifest), "--ledger", ledger, cwd=tmp_path)
    assert code == 0, err
    code2, exported, err2 = await ideobatch(
        "export", str(manifest), "--ledger", ledger, "--format", "jsonl", cwd=tmp_path
    )
    assert code2 == 0, err2
    assert API_KEY[:8] not in out + err + exported
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY[:8].encode() not in path.read_bytes(), path
