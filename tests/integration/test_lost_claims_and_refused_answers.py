"""Leases a run holds without knowing it, answers the ledger cannot store, kept files it refuses.

Found by an adversarial pass over issue 18; each test failed before its fix
(in `worker.JobRunner._nothing_left`, `wire.parse_result` and
`running.take_back_kept_answers`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from pipeline import running
from pipeline.endpoints import endpoint
from pipeline.fake_server import FakeServer
from pipeline.recovery import RECOVERY_DIR
from pipeline.wire import parse_result
from tests.integration.conftest import run, write_manifest


async def test_a_job_left_leased_to_this_run_by_a_lost_claim_answer_is_finished(
    tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim whose COMMIT went through but whose answer was lost leaves jobs leased to the run.

    The run renews every lease it holds, so those jobs never expire: before the
    fix the run waited for them forever (found with a relay that drops the
    answer of a claim's COMMIT on PostgreSQL). Forged here: jobs leased to the
    owner the run will have.
    """
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [one, two, three]\n")
    code, _ = await run(manifest, fake_server, tmp_path, max_jobs=1)
    assert code == 0
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute(
            "UPDATE jobs SET state = 'running', lease_owner = 'me', lease_expires_at = ? "
            "WHERE state = 'pending'",
            (time.time() + 3600,),
        )
    monkeypatch.setattr(running, "new_owner", lambda: "me")
    code, summary = await asyncio.wait_for(run(manifest, fake_server, tmp_path), 30)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] == 3
    assert fake_server.state.stats()["duplicate_billed"] == 0


def test_a_seed_or_text_no_ledger_column_holds_is_cleaned_not_refused() -> None:
    """The call is paid: a seed past BIGINT or a 40-character resolution must not be refused."""
    body = {
        "data": [
            {
                "url": "https://cdn.example/a.png",
                "prompt": "p",
                "resolution": "1024x1024 (upscaled from 512x512 by 2x)",
                "style_type": "PHOTOREALISTIC_CINEMATIC_LIGHTING_V3",
                "seed": 2**64,
                "is_image_safe": True,
            }
        ]
    }
    image = parse_result(endpoint("generate"), body).images[0]
    assert image.seed is None
    assert image.resolution is not None
    assert len(image.resolution) <= 32
    assert image.style_type is not None
    assert len(image.style_type) <= 32


@pytest.mark.parametrize("content", ["null", "[]", '"text"', "[" * 50_000 + "]" * 50_000])
async def test_a_kept_answer_file_of_the_wrong_shape_is_left_without_a_traceback(
    tmp_path: Path, fake_server: FakeServer, content: str
) -> None:
    """Valid JSON that is not an answer (or nested too deep) is logged and left; the run goes on."""
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [one, two]\n")
    folder = tmp_path / "out" / RECOVERY_DIR
    folder.mkdir(parents=True)
    (folder / f"t-{'0' * 64}.json").write_text(content)
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert (folder / f"t-{'0' * 64}.json").exists()


async def test_a_kept_answer_the_ledger_refuses_does_not_block_the_others(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """One kept answer the database refuses (a seed past SQLite's INTEGER) is left; the others go in."""
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [one, two]\n")
    code, _ = await run(manifest, fake_server, tmp_path)
    assert code == 0
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        rows = conn.execute(
            "SELECT jobs.key, remote_url, local_path, sha256 FROM images JOIN jobs ON jobs.id = images.job_id"
        ).fetchall()
        conn.execute("DELETE FROM images")
        conn.execute("UPDATE jobs SET state = 'pending', response_at = NULL, cost_micros = 0")
        conn.execute("UPDATE manifests SET spent_micros = 0")
    folder = tmp_path / "out" / RECOVERY_DIR
    folder.mkdir()
    for n, (key, url, path, sha) in enumerate(rows):
        image = {"index": 0, "url": url, "prompt": "p", "resolution": "1x1", "seed": 2**70 if n == 0 else 7}
        image |= {"is_image_safe": True, "style_type": None}
        download = {"index": 0, "state": "downloaded", "path": path, "sha256": sha, "bytes": 1}
        download |= {"width": 1, "height": 1, "error": None}
        kept = {"version": 1, "manifest": "t", "job_key": key, "attempt_id": None, "cost_micros": 80000}
        kept |= {"result": {"images": [image], "descriptions": [], "created": None}, "downloads": [download]}
        (folder / f"t-{key}.json").write_text(json.dumps(kept))
    before = fake_server.state.stats()["billed"]
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert fake_server.state.stats()["billed"] == before + 1  # the refused one only
    assert len(list(folder.glob("*.json"))) == 1
