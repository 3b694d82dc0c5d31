"""The downloader against hostile networks and output folders, over real sockets.

Images in pieces, a byte-a-while server, redirects (followed to loopback only
when the provider is on loopback), a folder swapped for a symlink between two
downloads, and a file system that refuses writes.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pipeline import downloads
from pipeline.downloads import Downloader
from pipeline.errors import BadImage, DownloadRetryable, OutputUnusable
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.naming import UnsafePath
from pipeline.redirects import RedirectPolicy
from tests.integration.elsewhere import MOVED_PNG, Elsewhere
from tests.integration.test_fake_server_downloads import image_url

PUBLIC = RedirectPolicy.for_base_url("https://api.ideogram.ai")


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=21)) as server:
        yield server


def files(folder: Path) -> list[str]:
    """Every file under ``folder`` (temporary ones included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


async def served(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as response:
        return await response.read()


async def test_an_image_in_pieces_is_judged_on_its_first_bytes_together(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An image whose first 4 bytes arrive alone is still a PNG, saved whole."""
    url = await image_url(http, server)
    expected = await served(http, url)
    server.set_faults(split_writes=1.0)
    saved = await Downloader(http, tmp_path).fetch(url, tmp_path / "kite")
    assert (saved.kind, saved.path.name) == ("png", "kite.png")
    assert saved.path.read_bytes() == expected
    assert saved.sha256 == hashlib.sha256(expected).hexdigest()


async def test_a_download_past_its_deadline_is_retryable(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An image sent at 20 B/s outlives a 0.5 s deadline: DownloadRetryable saying so, no file left."""
    url = await image_url(http, server)
    server.set_faults(trickle_bps=20)
    with pytest.raises(DownloadRetryable, match=r"deadline of 0\.5 s passed"):
        await Downloader(http, tmp_path, deadline_s=0.5).fetch(url, tmp_path / "slow")
    assert files(tmp_path) == []


async def test_a_redirect_to_another_loopback_port_is_followed_for_a_loopback_provider(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With the provider on 127.0.0.1, an image URL redirected to another loopback port is fetched there."""
    url = await image_url(http, server)
    async with Elsewhere() as elsewhere:
        server.set_faults(download_redirect_url=f"{elsewhere.url}/moved.png")
        policy = RedirectPolicy.for_base_url(server.url)
        saved = await Downloader(http, tmp_path, redirects=policy).fetch(url, tmp_path / "moved")
        assert elsewhere.hits == {"/moved.png": 1}
    assert saved.path.read_bytes() == MOVED_PNG


async def test_a_redirect_to_loopback_is_refused_for_a_public_provider(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With the provider at api.ideogram.ai, a redirect to 127.0.0.1 is refused; the target never asked."""
    url = await image_url(http, server)
    async with Elsewhere() as elsewhere:
        server.set_faults(download_redirect_url=f"{elsewhere.url}/moved.png")
        with pytest.raises(BadImage, match=r"redirect to 127\.0\.0\.1 refused: a loopback address"):
            await Downloader(http, tmp_path, redirects=PUBLIC).fetch(url, tmp_path / "moved")
        assert elsewhere.total == 0
    assert files(tmp_path) == []


async def test_a_redirect_loop_is_given_up_after_five_hops(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A redirect loop fails the image after 5 hops instead of following it forever."""
    url = await image_url(http, server)
    async with Elsewhere() as elsewhere:
        server.set_faults(download_redirect_url=f"{elsewhere.url}/loop")
        policy = RedirectPolicy.for_base_url(server.url)
        with pytest.raises(BadImage, match="more than 5 redirects"):
            await Downloader(http, tmp_path, redirects=policy).fetch(url, tmp_path / "loop")
        assert elsewhere.hits == {"/loop": 5}


async def test_a_folder_swapped_for_a_symlink_between_two_downloads_gets_nothing(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The second image of a folder swapped for a symlink to outside the output folder is refused."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    downloader = Downloader(http, out)
    first = await downloader.fetch(await image_url(http, server), out / "sub" / "first")
    assert first.path.parent == out / "sub"
    (out / "sub").rename(out / "sub-before")
    (out / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath, match="outside the output folder"):
        await downloader.fetch(await image_url(http, server), out / "sub" / "second")
    assert files(outside) == []
    assert files(out) == ["sub-before/first.png"]  # and no temporary file


async def test_an_image_folder_made_through_a_symlink_is_refused_before_it_is_made(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A missing folder below a symlink to outside is not created out there."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath):
        await Downloader(http, out).fetch(await image_url(http, server), out / "link" / "new" / "img")
    assert list(outside.iterdir()) == []


def no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
async def test_a_full_disk_is_output_unusable_not_a_download_error(
    server: FakeServer,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spill: bool,
) -> None:
    """ENOSPC on the rename is OutputUnusable naming the path; the temporary file is removed."""
    url = await image_url(http, server)
    if spill:
        monkeypatch.setattr(downloads, "SPILL_BYTES", 16)  # the body streams to its temporary file
    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OutputUnusable) as caught:
        await Downloader(http, tmp_path).fetch(url, tmp_path / "full")
    assert caught.value.path == str(tmp_path / "full.png")
    assert caught.value.reason == "No space left on device"
    assert files(tmp_path) == []


async def test_a_name_the_file_system_refuses_is_output_unusable(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A 300-byte file name (ENAMETOOLONG) is OutputUnusable, not a download to retry; nothing is left."""
    url = await image_url(http, server)
    with pytest.raises(OutputUnusable, match="File name too long"):
        await Downloader(http, tmp_path).fetch(url, tmp_path / ("x" * 300))
    assert files(tmp_path) == []


async def test_a_network_error_stays_a_retryable_download_error(
    server: FakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A reset connection is DownloadRetryable: the network, not the disk, failed."""
    url = await image_url(http, server)
    server.set_faults(rate_download_reset=1.0)
    with pytest.raises(DownloadRetryable):
        await Downloader(http, tmp_path).fetch(url, tmp_path / "reset")
