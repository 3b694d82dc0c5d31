"""Fixtures for tests that run the product against the fake server over real sockets."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline import retrying
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.ledger.repository import opened_ledger
from pipeline.running import RunOptions, execute_and_summarize, new_owner, run_manifest
from pipeline.settings import RunSettings
from pipeline.worker import RunResult

API_KEY = "test-key-1234567890"


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Iterator[None]:
    """Retries happen at once in tests (the backoff arithmetic has unit tests of its own)."""
    retrying.set_wait_scale(0.0)
    yield
    retrying.set_wait_scale(1.0)


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The key the fake server accepts, in both providers' default variables."""
    monkeypatch.setenv("CRAZYROUTER_API_KEY", API_KEY)
    monkeypatch.setenv("IDEOGRAM_API_KEY", API_KEY)
    return API_KEY


@pytest.fixture
async def fake_server(api_key: str) -> AsyncIterator[FakeServer]:
    """A fake Ideogram server on a free port, seeded for replayable faults."""
    async with FakeServer(FaultConfig(api_key=api_key, seed=1234)) as server:
        yield server


@pytest.fixture
def threaded_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """A fake server on a thread with its own event loop; the key set; no IDEOBATCH_LEDGER.

    A synchronous test can then run a command in its main thread, where `run`
    owns the event loop and the signal handlers as it does for a user.
    """
    monkeypatch.setenv("CRAZYROUTER_API_KEY", API_KEY)
    monkeypatch.delenv("IDEOBATCH_LEDGER", raising=False)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-server", daemon=True)
    thread.start()
    fake = FakeServer(FaultConfig(api_key=API_KEY, seed=11))
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result(30)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client session, to talk to the fake server directly."""
    async with aiohttp.ClientSession() as session:
        yield session


def write_manifest(
    folder: Path, body: str, *, name: str = "t", kind: str = "crazyrouter", extra: str = ""
) -> Path:
    """A manifest file in ``folder`` with the given `jobs:` body (YAML, indented freely)."""
    text = (
        f"version: 1\nname: {name}\nprovider:\n  kind: {kind}\n{extra}jobs:\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ")
        + "\n"
    )
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


async def run(manifest: Path, server: FakeServer, folder: Path, **options: Any) -> tuple[int, dict[str, Any]]:
    """`ideobatch run` in-process against ``server``; returns (exit code, summary)."""
    ledger = options.pop("ledger_url", f"sqlite:///{folder}/ledger.db")
    base_url = options.pop("base_url", server.url)
    return await run_manifest(
        RunOptions(
            manifest=str(manifest),
            ledger_url=ledger,
            out_dir=str(folder / "out"),
            quiet=True,
            base_url=base_url,
            **options,
        )
    )


async def run_saved_plan(manifest: Path, ledger: str, server: FakeServer, name: str = "t") -> RunResult:
    """Execute the jobs a plan stored, without planning again (as a worker would): files changed
    since the plan are found by the run itself."""
    async with opened_ledger(ledger) as opened:
        record = await opened.get_manifest(name)
        assert record is not None
        settings = RunSettings.from_config(record.config).with_overrides(base_url=server.url)
        options = RunOptions(str(manifest), ledger, quiet=True)
        result, _summary = await execute_and_summarize(
            opened, new_owner(), options, record=record, settings=settings, api_key=API_KEY
        )
        return result
