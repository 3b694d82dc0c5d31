"""What `ideobatch run` spends before its first request: a run loads none of the modules it does not use."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pipeline.fake_server import FakeServer
from tests.acceptance.conftest import command_env, manifest_for

#: modules a plain run on SQLite has no use for (each costs start-up time): Alembic for a new
#: ledger, Pillow for PNG sizes, jsonschema without a V4 JSON prompt, PostgreSQL's driver and
#: dialect, tqdm with --quiet, the review server's and the tests' libraries
NOT_ON_THE_RUN_PATH = (
    "alembic",
    "PIL",
    "jsonschema",
    "asyncpg",
    "sqlalchemy.dialects.postgresql",
    "tqdm",
    "pipeline.review",
    "jinja2",
    "prometheus_client",
    "pandas",
)

#: runs `ideobatch ARGS` (as a call, so that it returns), then lists the unwanted modules it loaded
WRAPPER = """
import json, sys
unwanted, report = json.loads(sys.argv[1]), sys.argv[2]
from pipeline.cli import main
try:
    main.main(args=sys.argv[3:], prog_name="ideobatch")
finally:
    loaded = sorted(m for m in unwanted if m in sys.modules)
    with open(report, "w") as out:
        json.dump(loaded, out)
"""


async def test_a_new_run_loads_only_what_it_uses(server: FakeServer, tmp_path: Path) -> None:
    """A first run (new SQLite ledger, PNG answers, --quiet) imports no module it has no use for."""
    manifest = manifest_for(tmp_path, server, "  - {op: generate, prompt: a lighthouse, repeat: 3}\n")
    report = tmp_path / "loaded.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRAPPER,
        json.dumps(NOT_ON_THE_RUN_PATH),
        str(report),
        "run",
        str(manifest),
        "--quiet",
        cwd=tmp_path,
        env=command_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert len(server.state.log) == 3
    assert json.loads(report.read_text()) == []
