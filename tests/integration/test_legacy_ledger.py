"""A ledger planned and finished by ideobatch 0.1.0 re-runs with this release: no job is new, none paid.

``tests/data/legacy_ledger/ledger.db`` was made by the code of commit 12ea405
(`make.py` there says how): every legacy op, a matrix with replicas, local
files and a URL source, a catalog, and a describe → generate chain. A change
to how keys are computed would make those jobs look new and pay for them
again; this test fails then.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "legacy_ledger"


def job_keys(ledger: Path) -> set[tuple[str, str]]:
    """(op, key) of every job of the ledger."""
    with sqlite3.connect(ledger) as conn:
        return set(conn.execute("SELECT op, key FROM jobs"))


async def test_a_ledger_of_the_previous_release_reruns_with_no_request(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """Every job of the old ledger keeps its key: the re-run plans nothing new and sends nothing."""
    for name in ("legacy.yaml", "catalog.csv", "ledger.db"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    shutil.copytree(FIXTURE / "src", tmp_path / "src")
    before = job_keys(tmp_path / "ledger.db")
    assert len(before) == 26

    code, summary = await run(
        tmp_path / "legacy.yaml", fake_server, tmp_path, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}"
    )

    assert code == 0, summary
    assert fake_server.state.stats()["requests"] == 0
    assert job_keys(tmp_path / "ledger.db") == before
    assert summary["jobs"] == {"pending": 0, "running": 0, "succeeded": 26, "failed": 0, "withdrawn": 0}
    assert summary["spend_usd"] == 1.98
