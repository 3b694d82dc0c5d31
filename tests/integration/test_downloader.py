"""Where image files are written: small ones by the event loop, unless the disk proves slow."""

from __future__ import annotations

import threading
from pathlib import Path

import aiohttp
import pytest

from pipeline import downloads
from pipeline.downloads import Downloader
from pipeline.fake_server import FakeServer
from tests.integration.conftest import API_KEY
from tests.integration.test_fake_server_downloads import image_url


def watch_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that write image files, in order."""
    writers: list[str] = []
    place = downloads._place

    def watched(body: bytes, temp: Path, final: Path, root: str) -> None:
        writers.append(threading.current_thread().name)
        place(body, temp, final, root)

    monkeypatch.setattr(downloads, "_place", watched)
    return writers


async def test_a_slow_write_sends_later_writes_to_a_thread(
    tmp_path: Path, fake_server: FakeServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a slow disk (network share) the event loop writes one image at most, then hands writes off."""
    writers = watch_writes(monkeypatch)
    monkeypatch.setattr(downloads, "INLINE_WRITE_SLOW_S", -1.0)  # every write counts as slow
    out = tmp_path / "out"
    downloader = Downloader(http, out)
    saved = [
        await downloader.fetch(await image_url(http, fake_server, API_KEY), out / f"image-{i}")
        for i in range(3)
    ]
    main = threading.main_thread().name
    assert writers[0] == main
    assert all(name != main for name in writers[1:])
    names = ["image-0.png", "image-1.png", "image-2.png"]
    assert [s.path.name for s in saved] == names
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary file left behind


async def test_small_images_on_a_fast_disk_are_written_by_the_event_loop(
    tmp_path: Path, fake_server: FakeServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers = watch_writes(monkeypatch)
    monkeypatch.setattr(downloads, "INLINE_WRITE_SLOW_S", 10.0)
    downloader = Downloader(http, tmp_path)
    for i in range(3):
        await downloader.fetch(await image_url(http, fake_server, API_KEY), tmp_path / f"image-{i}")
    assert writers == [threading.main_thread().name] * 3
    assert downloader.inline_writes
