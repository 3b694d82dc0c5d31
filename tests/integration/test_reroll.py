"""`ideobatch reroll --rejected` and `export --picked`: replacing rejected images, listing picked ones."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.ledger.repository import opened_ledger
from tests.integration.conftest import run, write_manifest

PROMPTS = ["a red fox", "a grey wolf", "a brown bear", "a white owl", "a green frog"]
VERDICTS = ["rejected", "picked", "rejected", "picked", "rejected"]


def jobs_of(folder: Path) -> list[tuple[str, int, dict[str, Any]]]:
    with sqlite3.connect(folder / "ledger.db") as conn:
        rows = conn.execute("SELECT key, replica, request FROM jobs ORDER BY id").fetchall()
    return [(key, replica, json.loads(request)) for key, replica, request in rows]


def run_once(manifest: Path, folder: Path, api_key: str) -> tuple[int, dict[str, Any], int]:
    """`run` against a fresh fake server; (exit code, summary, calls billed by that server)."""

    async def go() -> tuple[int, dict[str, Any], int]:
        async with FakeServer(FaultConfig(api_key=api_key, seed=9)) as server:
            code, summary = await run(manifest, server, folder)
            return code, summary, server.state.stats()["billed"]

    return asyncio.run(go())


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_reroll_rejected_replaces_exactly_the_rejected_images(tmp_path: Path, api_key: str) -> None:
    """Reject 3 of 5, pick 2: 3 new jobs differing only in seed and replica, paid when run; picked export."""
    manifest = write_manifest(
        tmp_path, f"- op: generate\n  model: V_2_TURBO\n  prompts: {json.dumps(PROMPTS)}\n"
    )
    assert run_once(manifest, tmp_path, api_key)[::2] == (0, 5)
    ledger = f"sqlite:///{tmp_path}/ledger.db"

    async def judge() -> None:
        async with opened_ledger(ledger) as opened:
            for image_id, verdict in enumerate(VERDICTS, start=1):
                assert await opened.set_pick(image_id, verdict)

    asyncio.run(judge())
    before = jobs_of(tmp_path)

    assert cli("reroll", "t", "--rejected", "--ledger", ledger) == (
        0,
        "3 job(s) planned for rejected images, estimated $0.15\n"
        "run them: ideobatch run t (or: ideobatch worker)\n",
    )
    new = jobs_of(tmp_path)[len(before) :]
    originals = {request["prompt"]: (replica, request) for _key, replica, request in before}
    for key, replica, request in new:
        old_replica, old = originals[request["prompt"]]
        assert replica == old_replica + 1
        assert {k: v for k, v in request.items() if k != "seed"} == old
        assert isinstance(request["seed"], int)
        assert key not in {k for k, _r, _q in before}
    assert sorted(r["prompt"] for _k, _r, r in new) == sorted(PROMPTS[i] for i in (0, 2, 4))
    assert cli("reroll", "t", "--rejected", "--ledger", ledger)[1].startswith("0 job(s) planned")

    code, summary, billed = run_once(manifest, tmp_path, api_key)
    assert (code, billed, summary["jobs"]["succeeded"]) == (0, 3, 8)
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        made_seeds = {seed for (seed,) in conn.execute("SELECT seed FROM images WHERE id > 5")}
    assert made_seeds == {r["seed"] for _k, _r, r in new}

    code, out = cli("export", "t", "--picked", "--ledger", ledger)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(r["prompt"] for r in rows) == [PROMPTS[1], PROMPTS[3]]
    assert {r["pick"] for r in rows} == {"picked"}


def test_reroll_without_a_selection_is_a_usage_error(tmp_path: Path) -> None:
    """`reroll MANIFEST` without --rejected exits 2 instead of guessing what to reroll."""
    code, out = cli("reroll", "t", "--ledger", f"sqlite:///{tmp_path}/ledger.db")
    assert code == 2
    assert "--rejected" in out
