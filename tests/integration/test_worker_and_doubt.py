"""`worker --base-url` and its exit codes; the in-doubt attempts and their cost in `status` (SPEC §3, §11)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from click.testing import CliRunner

from pipeline.cli import main
from pipeline.exit_codes import EXIT_FAILED_JOBS, EXIT_OK
from pipeline.fake_server import FakeServer
from pipeline.planning import save_plan
from pipeline.running import run_worker
from tests.integration.conftest import run, write_manifest

#: nothing listens here: a worker that used the manifest's own base_url would fail every call
UNUSED_BASE_URL = "http://127.0.0.1:9"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")


async def test_worker_base_url_overrides_the_planned_one_and_failed_jobs_exit_1(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """A worker given --base-url calls it (not the manifest's URL); a refused job makes it exit 1."""
    fake_server.set_faults(unsafe_word="forbidden")
    manifest = tmp_path / "w.yaml"
    manifest.write_text(
        f"version: 1\nname: w\nprovider:\n  kind: crazyrouter\n  base_url: {UNUSED_BASE_URL}\n"
        f"output:\n  dir: {tmp_path / 'out'}\njobs:\n"
        "  - op: generate\n    prompts: [fine, a forbidden one, also fine]\n"
    )
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    await save_plan(str(manifest), ledger, None)
    outcome = await run_worker(ledger, follow=False, quiet=True, lease_s=30, base_url=fake_server.url)
    assert (outcome.code, outcome.interrupted) == (EXIT_FAILED_JOBS, False)
    assert fake_server.state.stats()["billed"] == 2
    fake_server.set_faults(unsafe_word=None)
    assert (
        await asyncio.to_thread(CliRunner().invoke, main, ["retry", "w", "--ledger", ledger, "--failed"])
    ).exit_code == 0
    outcome = await run_worker(ledger, follow=False, quiet=True, lease_s=30, base_url=fake_server.url)
    assert outcome.code == EXIT_OK


async def test_status_lists_in_doubt_attempts_with_their_cost_and_iso_times(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """Calls reset after billing: status --json has in_doubt_usd and ISO times; --in-doubt lists each one."""
    fake_server.set_faults(rate_reset=1.0)
    manifest = write_manifest(
        tmp_path,
        "- op: generate\n  model: V_2\n  prompts: [doubtful one, doubtful two]\n",
        name="d",
        extra="retry:\n  attempts: 2\n",
    )
    await run(manifest, fake_server, tmp_path)
    ledger = f"sqlite:///{tmp_path}/ledger.db"

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(main, ["status", "d", "--ledger", ledger, *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    status = json.loads(await asyncio.to_thread(invoke, "--json"))
    assert status["in_doubt"] == 4
    assert status["in_doubt_usd"] == 0.32
    assert all(ISO.match(run["started_at"]) and ISO.match(run["ended_at"]) for run in status["runs"])
    listed = json.loads(await asyncio.to_thread(invoke, "--in-doubt", "--json"))
    assert listed["in_doubt_usd"] == 0.32
    attempts = listed["attempts"]
    assert len(attempts) == 4
    assert {a["prompt"] for a in attempts} == {"doubtful one", "doubtful two"}
    assert {a["reason"] for a in attempts} == {"connection_reset"}
    assert all(
        ISO.match(a["started_at"]) and a["op"] == "generate" and len(a["job_key"]) == 64 for a in attempts
    )
    text = await asyncio.to_thread(invoke, "--in-doubt")
    assert text.startswith("4 attempt(s) in doubt, up to $0.32")
    assert text.count("connection_reset") == 4
    assert "up to $0.32; `status --in-doubt` lists them" in await asyncio.to_thread(invoke)
