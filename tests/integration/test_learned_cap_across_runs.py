"""The account's cap learned from 429s is kept in the ledger: a later run starts under it (SPEC §11)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest

PROMPTS = "[" + ", ".join(f"a fox {n}" for n in range(8)) + "]"


async def runs_on_one_ledger(tmp_path: Path, fake_server: FakeServer, *, forget: bool) -> tuple[int, int]:
    """Two runs of two manifests on one account (real cap 2, configured 6); each run's 429s."""
    fake_server.set_faults(inflight_limit=2, latency_ms=50)
    limits = "limits:\n  concurrency: 6\n"
    first = write_manifest(tmp_path, f"- op: generate\n  prompts: {PROMPTS}\n", name="first", extra=limits)
    second = write_manifest(tmp_path, f"- op: generate\n  prompts: {PROMPTS}\n", name="second", extra=limits)
    code, summary = await run(first, fake_server, tmp_path)
    assert code == 0, summary
    refused_first = fake_server.state.stats()["by_status"].get("429", 0)
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        [learned] = conn.execute("SELECT learned_cap FROM accounts").fetchone()
        # the real cap, or one place above it when the run ended after a successful probe
        assert learned in (2, 3)
        if forget:  # as before the cap was kept: each run learns it again
            conn.execute("UPDATE accounts SET learned_cap = NULL")
    fake_server.state.reset()
    code, summary = await run(second, fake_server, tmp_path)
    assert code == 0, summary
    return refused_first, fake_server.state.stats()["by_status"].get("429", 0)


async def test_a_second_run_does_not_burst_over_the_cap_the_first_one_learned(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """The first run bursts over the real cap (4-5 refused); the second meets only AIMD's probes.

    The learned cap may end one place above the real one (a probe that had not
    been refused yet when the run ended), and the run probes one place higher
    every 2 x cap successful calls: two 429s at most, where a run that forgot
    the cap meets five.
    """
    refused_first, refused_second = await runs_on_one_ledger(tmp_path, fake_server, forget=False)
    assert refused_first >= 4, "the first run went over the real cap before it learned it"
    assert refused_second <= 2


async def test_a_forgotten_cap_is_burst_over_again(tmp_path: Path, fake_server: FakeServer) -> None:
    """Without the learned cap, the second run bursts as the first did (the check above can fail)."""
    _first, refused_second = await runs_on_one_ledger(tmp_path, fake_server, forget=True)
    assert refused_second >= 4
