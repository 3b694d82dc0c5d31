"""Every recipe in examples/ and the demo manifest run as written against the fake server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from pipeline.fake_server import FakeServer
from tests.integration.conftest import run

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [
    ROOT / "examples" / "catalog-upscale" / "manifest.yaml",
    ROOT / "examples" / "postgres-workers" / "manifest.yaml",
    ROOT / "examples" / "describe-generate" / "manifest.yaml",
    ROOT / "examples" / "v3-catalog" / "manifest.yaml",
    ROOT / "examples" / "v4-restyle" / "manifest.yaml",
    ROOT / "examples" / "cron" / "nightly.yaml",
    ROOT / "jobs" / "demo.yaml",
]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.parent.name + "/" + p.name)
async def test_recipe_runs_against_the_fake_server(
    tmp_path: Path, fake_server: FakeServer, manifest: Path
) -> None:
    """The recipe validates, runs to exit 0, and a second run sends nothing."""
    code, summary = await run(manifest, fake_server, tmp_path)
    assert code == 0, summary
    assert summary["jobs"]["succeeded"] >= 2
    assert summary["jobs"]["failed"] == 0
    sent = len(fake_server.state.log)
    code, _ = await run(manifest, fake_server, tmp_path)
    assert code == 0
    assert len(fake_server.state.log) == sent


def cron_command(root: Path) -> str:
    """The recipe's crontab command, with its absolute paths moved under ``root``."""
    [entry] = [
        line
        for line in (ROOT / "examples" / "cron" / "crontab.txt").read_text().splitlines()
        if line[:1].isdigit()
    ]
    command = entry.split(None, 5)[5]
    for path in ("/srv", "/var/log"):
        command = command.replace(path, f"{root}{path}")
    return command


@pytest.mark.parametrize(("code", "logged"), [(0, ""), (1, ""), (3, "nightly banners: exit 3\n")])
def test_cron_recipe_reports_the_runs_own_exit_code(tmp_path: Path, code: int, logged: str) -> None:
    """The crontab line sends `logger` the run's exit code (not `test`'s), and only above 1."""
    for folder in ("srv/banners/.venv/bin", "srv/secrets", "var/log", "bin"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "srv/secrets/crazyrouter").write_text("sk-test\n")
    stubs = {
        "srv/banners/.venv/bin/ideobatch": f"#!/bin/sh\nexit {code}\n",
        "bin/logger": f'#!/bin/sh\nshift 2\necho "$@" >> {tmp_path}/logger.txt\n',
    }
    for name, text in stubs.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    env = {"PATH": f"{tmp_path}/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["/bin/sh", "-c", cron_command(tmp_path)], env=env, check=False, timeout=10)
    told = tmp_path / "logger.txt"
    assert (told.read_text() if told.exists() else "") == logged


@pytest.mark.postgres
async def test_postgres_workers_recipe_runs_end_to_end(
    tmp_path: Path, fake_server: FakeServer, pg_url: str
) -> None:
    """postgres-workers/try-it.sh: plan --save, two `worker --base-url`, status; each job billed once."""
    recipe = tmp_path / "postgres-workers"
    shutil.copytree(ROOT / "examples" / "postgres-workers", recipe)
    env = dict(os.environ)
    env.update(
        LEDGER=pg_url,
        BASE_URL=fake_server.url,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        IDEOBATCH_TESTING_WAIT_SCALE="0",
    )
    process = await asyncio.create_subprocess_exec(
        "/bin/sh", str(recipe / "try-it.sh"), env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()
    assert "6 succeeded, 0 failed" in out.decode().replace("0 pending, 0 running, ", "")
    stats = fake_server.state.stats()
    assert (stats["billed"], stats["duplicate_billed"]) == (6, 0)
    assert len(list((recipe / "out" / "pg-posters").rglob("*.png"))) == 6
