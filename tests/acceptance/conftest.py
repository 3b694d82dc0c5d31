"""Acceptance tests: the `ideobatch` command as a subprocess, signals sent, exit codes and JSON read."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.fake_server import FakeServer, FaultConfig

API_KEY = "acceptance-key-0123456789"

#: commands started by the running test (killed at its end if still running)
_STARTED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _no_command_outlives_its_test() -> AsyncIterator[None]:
    """A test that fails half-way leaves no `ideobatch` process behind to disturb the next one."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.returncode is None:
            process.kill()
            await process.communicate()


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    """A fake server in the test's process; the runner under test is another process."""
    async with FakeServer(FaultConfig(api_key=API_KEY, seed=7)) as fake:
        yield fake


def command_env() -> dict[str, str]:
    """The environment of an `ideobatch` subprocess: the key, and no retry waits."""
    env = dict(os.environ)
    env.update(CRAZYROUTER_API_KEY=API_KEY, IDEOGRAM_API_KEY=API_KEY, IDEOBATCH_TESTING_WAIT_SCALE="0")
    return env


async def start(
    *args: str, cwd: Path, key: str = API_KEY, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """Start `ideobatch ARGS` (stdout and stderr captured), with ``key`` as the API key."""
    environment = command_env()
    environment.update(CRAZYROUTER_API_KEY=key, IDEOGRAM_API_KEY=key, **(env or {}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline.cli",
        *args,
        cwd=cwd,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _STARTED.append(process)
    return process


async def finish(process: asyncio.subprocess.Process, limit_s: float = 60) -> tuple[int, str, str]:
    """Wait for a started command; returns (exit code, stdout, stderr). Killed past ``limit_s``."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit_s)
    except TimeoutError:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def ideobatch(
    *args: str, cwd: Path, limit_s: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `ideobatch ARGS` to the end (``env``: variables added to its environment)."""
    return await finish(await start(*args, cwd=cwd, env=env), limit_s)


async def status_json(ledger: str, manifest: str, cwd: Path) -> dict[str, Any]:
    """`ideobatch status MANIFEST --json`."""
    code, out, err = await ideobatch("status", manifest, "--ledger", ledger, "--json", cwd=cwd)
    assert code == 0, err
    return json.loads(out)


def manifest_for(folder: Path, server: FakeServer, body: str, *, name: str = "acc", extra: str = "") -> Path:
    """A manifest pointed at ``server``."""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"version: 1\nname: {name}\nprovider:\n  kind: crazyrouter\n  base_url: {server.url}\n"
        f"{extra}jobs:\n{body}"
    )
    return path


def succeeded(folder: Path) -> int:
    """Jobs the ledger has finished (read while the runner writes: SQLite WAL allows it)."""
    if not (folder / "ledger.db").exists():
        return 0
    with sqlite3.connect(folder / "ledger.db", timeout=10) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is being created
            return 0
