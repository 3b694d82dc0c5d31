"""Budgets: never spend past the limit, 402 stops the run, spend is reported everywhere (SPEC §6 Budget)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run, write_manifest

PROMPTS = ", ".join(f"budgeted {i}" for i in range(20))
TWENTY_V2 = f"- op: generate\n  prompts: [{PROMPTS}]\n  model: V_2\n"


async def test_budget_runs_exactly_what_fits_and_claims_no_more(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """$1.00 at $0.08 a job: exactly 12 jobs run, the 13th is never claimed, exit 3 with the spend."""
    manifest = write_manifest(tmp_path, TWENTY_V2, extra="limits:\n  concurrency: 8\n")
    code, summary = await run(manifest, fake_server, tmp_path, budget_usd=1.0)
    assert code == 3
    assert summary["jobs"]["succeeded"] == 12
    assert summary["jobs"]["pending"] == 8
    assert fake_server.state.stats()["billed"] == 12
    assert summary["spend_usd"] == pytest.approx(0.96)
    assert summary["budget_usd"] == pytest.approx(1.0)
    assert summary["run"]["stop_reason"] == "budget"
    assert "budget reached: $0.96 spent of $1.00" in summary["run"]["message"]
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        assert conn.execute("SELECT count(*) FROM attempts").fetchone() == (12,)
        assert conn.execute("SELECT reserved_micros FROM manifests").fetchone() == (0,)


async def test_budget_is_the_manifests_total_across_runs(tmp_path: Path, fake_server: FakeServer) -> None:
    """A second run with the same budget does nothing; a larger budget lets the rest run."""
    manifest = write_manifest(tmp_path, TWENTY_V2)
    await run(manifest, fake_server, tmp_path, budget_usd=1.0)
    code, summary = await run(manifest, fake_server, tmp_path, budget_usd=1.0)
    assert code == 3
    assert summary["run"]["succeeded"] == 0
    assert fake_server.state.stats()["billed"] == 12
    code, summary = await run(manifest, fake_server, tmp_path, budget_usd=2.0)
    assert code == 0
    assert summary["jobs"]["succeeded"] == 20
    assert summary["spend_usd"] == pytest.approx(1.60)


async def test_budget_counts_images_and_price_overrides(tmp_path: Path, fake_server: FakeServer) -> None:
    """A 4-image job costs 4 x price; `prices:` overrides the default table."""
    manifest = write_manifest(
        tmp_path,
        "- op: generate\n  prompt: quad\n  model: V_2\n  num_images: 4\n  repeat: 5\n",
        extra="prices:\n  generate.V_2: 0.10\nlimits:\n  budget_usd: 1.25\n",
    )
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 3
    assert summary["jobs"]["succeeded"] == 3
    assert summary["spend_usd"] == pytest.approx(1.20)


async def test_402_stops_the_run_and_a_refill_resumes_it(tmp_path: Path, fake_server: FakeServer) -> None:
    """Insufficient funds: the run stops at the first 402 with a clear message; after a top-up it finishes."""
    fake_server.set_faults(balance_usd=0.40)
    manifest = write_manifest(tmp_path, TWENTY_V2, kind="ideogram", extra="limits:\n  concurrency: 1\n")
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 3
    assert summary["jobs"]["succeeded"] == 5
    assert summary["jobs"]["failed"] == 0
    assert "HTTP 402" in summary["run"]["message"]
    assert sum(1 for e in fake_server.state.log if e.status == 402) == 1
    fake_server.set_faults(balance_usd=100.0)
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert summary["jobs"]["succeeded"] == 20
    assert fake_server.state.stats()["duplicate_billed"] == 0
