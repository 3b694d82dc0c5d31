"""The request log and counters tests rely on: billing, duplicates, in-flight peak, reset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import render_sample
from pipeline.fake_server.testing import Dialect, auth_headers, native_form, op_url

KEY = "fake-key"
SOURCE = render_sample("stats", 64, 48, "png")
STATS_KEYS = {
    "requests",
    "billed",
    "billed_usd",
    "by_status",
    "duplicate_billed",
    "max_inflight_images",
    "inflight_images",
    "downloads",
    "balance_usd",
}


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=8, balance_usd=5.0)) as server:
        yield server


async def generate(
    http: aiohttp.ClientSession,
    server: FakeServer,
    request: dict[str, Any],
    dialect: Dialect = "ideogram",
) -> int:
    url = op_url(server.url, dialect, "generate")
    body = {"image_request": request}
    async with http.post(url, json=body, headers=auth_headers(dialect, KEY)) as response:
        await response.read()
        return response.status


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        return await response.json()


async def test_log_records_each_call(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """Every call is logged with dialect, op, status, billing, cost, images, hash and fault."""
    await generate(http, server, {"prompt": "a", "num_images": 3, "model": "V_2_TURBO"})
    await generate(http, server, {"prompt": "a", "num_images": 9})
    first, second = server.state.log
    assert (first.dialect, first.op, first.status, first.billed) == ("ideogram", "generate", 200, True)
    assert (float(first.cost), first.num_images, first.fault) == (0.15, 3, None)
    assert first.request_hash is not None
    assert len(first.request_hash) == 64
    assert (second.status, second.billed, float(second.cost)) == (400, False, 0.0)
    entries = await get_json(http, f"{server.url}/_log")
    assert entries[0]["cost"] == 0.15
    assert entries[0]["request_hash"] == first.request_hash
    assert set(entries[0]) >= {"time", "dialect", "op", "status", "billed", "num_images", "fault"}


async def test_stats_count_money_statuses_and_duplicates(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """Identical billed requests count as duplicates, whatever the dialect; a new one does not."""
    request = {"prompt": "same", "seed": 1}
    await generate(http, server, request)
    await generate(http, server, request, "crazyrouter")
    await generate(http, server, {"prompt": "other", "seed": 1})
    await generate(http, server, {"prompt": "x", "model": "V_0"})
    stats = await get_json(http, f"{server.url}/_stats")
    assert set(stats) >= STATS_KEYS
    assert stats == server.state.stats()
    assert (stats["requests"], stats["billed"], stats["duplicate_billed"]) == (4, 3, 1)
    assert stats["billed_usd"] == pytest.approx(0.24)
    assert stats["balance_usd"] == pytest.approx(4.76)
    assert stats["by_status"] == {"200": 3, "400": 1}
    log = server.state.log
    assert log[0].request_hash == log[1].request_hash != log[2].request_hash


async def test_source_bytes_are_part_of_the_hash(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """The same upscale of two different images hashes differently; of one image, equally."""
    for image in (SOURCE, SOURCE, render_sample("other", 64, 48, "png")):
        form = native_form(image, {})
        async with http.post(f"{server.url}/upscale", data=form, headers={"Api-Key": KEY}) as r:
            assert r.status == 200
    hashes = [entry.request_hash for entry in server.state.log]
    assert hashes[0] == hashes[1] != hashes[2]
    assert server.state.stats()["duplicate_billed"] == 1
    assert server.state.stats()["billed_usd"] == pytest.approx(0.18)


async def test_downloads_are_counted(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """Each image GET is counted; the API call count does not change."""
    body = {"image_request": {"prompt": "x", "num_images": 2}}
    async with http.post(f"{server.url}/generate", json=body, headers={"Api-Key": KEY}) as r:
        urls = [item["url"] for item in (await r.json())["data"]]
    for url in urls:
        async with http.get(url) as response:
            await response.read()
    stats = server.state.stats()
    assert (stats["downloads"], stats["downloads_served"], stats["requests"]) == (2, 2, 1)


async def test_reset_clears_log_counters_and_spend(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """POST /_reset and server.reset() clear the log and restore the configured balance."""
    await generate(http, server, {"prompt": "x"})
    async with http.post(f"{server.url}/_reset") as response:
        stats = await response.json()
    assert (stats["requests"], stats["billed"], stats["balance_usd"]) == (0, 0, 5.0)
    await generate(http, server, {"prompt": "x"})
    server.reset()
    assert server.state.log == []
    assert server.state.stats()["duplicate_billed"] == 0
