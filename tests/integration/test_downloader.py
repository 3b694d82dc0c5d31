"""Where image files are written: small ones by the event loop, unless the disk proves slow."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pipeline import downloads
from pipeline.downloads import Downloader
from pipeline.fake_server import FakeServer, FaultConfig
from tests.integration.test_fake_server_downloads import image_url


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=5)) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_slow_write_sends_later_writes_to_a_thread(
    tmp_path: Path, server: FakeServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a slow disk (network share) the event loop writes one image at most, then hands writes off."""
    writers: list[str] = []
    place = downloads._place

    def slow_place(body: bytes | None, temp: Path, final: Path) -> None:
        writers.append(threading.current_thread().name)
        time.sleep(downloads.INLINE_WRITE_SLOW_S * 2)
        place(body, temp, final)

    monkeypatch.setattr(downloads, "_place", slow_place)
    downloader = Downloader(http)
    saved = [
        await downloader.fetch(await image_url(http, server), tmp_path / "out" / f"image-{i}")
        for i in range(3)
    ]
    main = threading.main_thread().name
    assert writers[0] == main
    assert all(name != main for name in writers[1:])
    assert [s.path.name for s in saved] == ["image-0.png", "image-1.png", "image-2.png"]
    assert all(s.path.is_file() for s in saved)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "image-0.png",
        "image-1.png",
        "image-2.png",
    ]


async def test_small_images_on_a_fast_disk_are_written_by_the_event_loop(
    tmp_path: Path, server: FakeServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[str] = []
    place = downloads._place

    def watched_place(body: bytes | None, temp: Path, final: Path) -> None:
        writers.append(threading.current_thread().name)
        place(body, temp, final)

    monkeypatch.setattr(downloads, "_place", watched_place)
    monkeypatch.setattr(downloads, "INLINE_WRITE_SLOW_S", 10.0)
    downloader = Downloader(http)
    for i in range(3):
        await downloader.fetch(await image_url(http, server), tmp_path / f"image-{i}")
    assert writers == [threading.main_thread().name] * 3
    assert downloader.inline_writes
