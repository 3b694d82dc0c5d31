"""Each injected fault, provoked over a real socket (rates of 1.0 for determinism)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import render_sample
from pipeline.fake_server.testing import Dialect, auth_headers, native_form, op_url

KEY = "fake-key"
DIALECTS: list[Dialect] = ["ideogram", "crazyrouter"]
SOURCE = render_sample("faults", 64, 64, "png")


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=1)) as server:
        yield server


async def generate(
    http: aiohttp.ClientSession,
    server: FakeServer,
    request: dict[str, Any] | None = None,
    dialect: Dialect = "ideogram",
) -> tuple[int, aiohttp.ClientResponse, Any]:
    """POST /generate and return status, response and parsed body (None if not JSON)."""
    body = {"image_request": request or {"prompt": "a red kite"}}
    url = op_url(server.url, dialect, "generate")
    async with http.post(url, json=body, headers=auth_headers(dialect, KEY)) as response:
        raw = await response.read()
        parsed = await response.json() if "json" in response.content_type else raw.decode()
        return response.status, response, parsed


async def test_latency_delays_the_answer(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """A fixed latency of 60 ms holds the call, its image counted in flight meanwhile."""
    server.set_faults(latency_ms=60, latency_dist="fixed")
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, _ = await generate(http, server)
    assert status == 200
    assert loop.time() - started >= 0.055
    assert server.state.stats()["max_inflight_images"] == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_rate_429_refuses_calls_unbilled(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """rate_429 answers 429 inflight_limit with Retry-After in seconds, unbilled."""
    server.set_faults(rate_429=1.0, retry_after_s=3)
    status, response, body = await generate(http, server, dialect=dialect)
    assert status == 429
    assert response.headers["Retry-After"] == "3"
    if dialect == "ideogram":
        assert body["reject_reason"] == "inflight_limit"
        assert body["max_inflight_requests"] == 10
    else:
        assert body["error"]["code"] == "rate_limit_exceeded"
    assert server.state.stats()["billed"] == 0
    assert server.state.log[-1].fault == "rate_429"


async def test_retry_after_modes(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """Retry-After comes as seconds, as an HTTP date, not at all, or rotating (mixed)."""
    server.set_faults(rate_429=1.0, retry_after_s=2, retry_after="date")
    _, response, _ = await generate(http, server)
    when = parsedate_to_datetime(response.headers["Retry-After"]).timestamp()
    assert when == pytest.approx(server.state.now() + 2, abs=2)
    server.set_faults(retry_after="none")
    _, response, _ = await generate(http, server)
    assert "Retry-After" not in response.headers
    server.set_faults(retry_after="mixed")
    seen = []
    for _ in range(3):
        _, response, _ = await generate(http, server)
        seen.append(response.headers.get("Retry-After"))
    assert seen[0] == "2"
    assert seen[1] is not None
    assert seen[1].endswith("GMT")
    assert seen[2] is None


async def test_inflight_limit_counts_images(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """With 4 of 5 images in flight, a 2-image call gets 429 and a 1-image call passes."""
    server.set_faults(inflight_limit=5)
    server.state.hold()
    two = {"prompt": "x", "num_images": 2}
    held = [asyncio.create_task(generate(http, server, two)) for _ in range(2)]
    await server.state.wait_until(lambda s: s.inflight_images == 4)
    status, _, body = await generate(http, server, two)
    assert status == 429
    assert body["max_inflight_requests"] == 5
    assert server.state.log[-1].fault == "inflight_limit"
    one = asyncio.create_task(generate(http, server, {"prompt": "x"}))
    await server.state.wait_until(lambda s: s.inflight_images == 5)
    server.state.release()
    assert [(await task)[0] for task in [*held, one]] == [200, 200, 200]
    stats = server.state.stats()
    assert (stats["max_inflight_images"], stats["inflight_images"], stats["billed"]) == (5, 0, 3)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_rate_5xx_answers_html_and_does_not_bill(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """rate_5xx answers 500/502/503 with an HTML page, after the latency, unbilled."""
    server.set_faults(rate_5xx=1.0)
    statuses = set()
    for _ in range(8):
        status, response, body = await generate(http, server, dialect=dialect)
        statuses.add(status)
        assert response.content_type == "text/html"
        assert "<html>" in body
    assert statuses <= {500, 502, 503}
    assert len(statuses) > 1
    assert server.state.stats()["billed"] == 0
    assert {entry.fault for entry in server.state.log} == {"5xx"}


async def test_rate_reset_bills_then_drops_the_connection(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """rate_reset does the work, bills it, and resets the connection without an answer."""
    server.set_faults(rate_reset=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await generate(http, server)
    entry = server.state.log[-1]
    assert (entry.status, entry.billed, entry.fault) == (0, True, "reset")
    server.set_faults(rate_reset=0.0)
    assert (await generate(http, server))[0] == 200  # the session recovers


async def test_rate_truncate_bills_and_cuts_the_body(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """rate_truncate sends 200 with a Content-Length the body never reaches."""
    server.set_faults(rate_truncate=1.0)
    with pytest.raises(aiohttp.ClientPayloadError):
        await generate(http, server)
    entry = server.state.log[-1]
    assert (entry.status, entry.billed, entry.fault) == (200, True, "truncate")


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_unsafe_word_gets_422_unbilled(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """A prompt with the unsafe word (any case) is refused with 422 and not billed."""
    server.set_faults(unsafe_word="forbidden")
    status, _, body = await generate(http, server, {"prompt": "a FORBIDDEN act"}, dialect)
    assert status == 422
    message = "Prompt provided failed safety check due to the inclusion of prohibited content."
    if dialect == "ideogram":
        assert body == {"error": message}
    else:
        assert body["error"]["message"] == message
    assert server.state.stats()["billed"] == 0


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_withheld_word_bills_images_without_urls(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """A prompt with the withheld word gets 200, is_image_safe false, url null, and is billed."""
    server.set_faults(withheld_word="murky")
    request = {"prompt": "a murky pond", "num_images": 2}
    status, _, body = await generate(http, server, request, dialect)
    assert status == 200
    for item in body["data"]:
        assert item["url"] is None
        assert item["is_image_safe"] is False
    assert server.state.stats()["billed_usd"] == pytest.approx(0.16)


@pytest.mark.parametrize(
    ("dialect", "status", "code"), [("ideogram", 402, None), ("crazyrouter", 403, "insufficient_quota")]
)
async def test_balance_refuses_what_it_cannot_cover(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect, status: int, code: str | None
) -> None:
    """Calls are charged to the balance; one it cannot cover is refused (402 / 403), unbilled."""
    server.set_faults(balance_usd=0.1)
    assert (await generate(http, server, dialect=dialect))[0] == 200  # V_2: 0.08
    refused, _, body = await generate(http, server, dialect=dialect)
    assert refused == status
    if code is None:
        assert body["reject_reason"] == "insufficient_funds"
    else:
        assert body["error"]["type"] == body["error"]["code"] == code
    cheap = {"prompt": "x", "model": "V_1_TURBO"}  # 0.02 fits
    assert (await generate(http, server, cheap, dialect))[0] == 200
    stats = server.state.stats()
    assert stats["balance_usd"] == pytest.approx(0.0)
    assert stats["billed"] == 2


async def test_balance_is_reserved_for_calls_in_flight(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """Two concurrent calls cannot both spend the same last dollars."""
    server.set_faults(balance_usd=0.1)
    server.state.hold()
    first = asyncio.create_task(generate(http, server))
    await server.state.wait_until(lambda s: s.inflight_images == 1)
    assert (await generate(http, server))[0] == 402
    server.state.release()
    assert (await first)[0] == 200


async def test_a_client_that_goes_away_is_still_billed(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """A call whose client disconnects mid-way finishes and is billed, as on the real API."""
    server.state.hold()
    task = asyncio.create_task(generate(http, server))
    await server.state.wait_until(lambda s: s.inflight_images == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    server.state.release()
    await server.state.wait_until(lambda s: s.stats()["billed"] == 1)
    assert server.state.log[-1].billed


async def test_seeded_faults_replay(http: aiohttp.ClientSession) -> None:
    """Two servers with the same seed answer the same call sequence with the same statuses."""
    runs = []
    for _ in range(2):
        config = FaultConfig(seed=99, rate_429=0.3, rate_5xx=0.3)
        async with FakeServer(config) as server:
            runs.append([(await generate(http, server))[0] for _ in range(20)])
    assert runs[0] == runs[1]
    assert {200, 429} <= set(runs[0])


async def test_faults_apply_to_every_op(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """Remix, upscale and describe obey faults like generate."""
    server.set_faults(rate_429=1.0)
    for op, request in [("remix", {"prompt": "x"}), ("upscale", {}), ("describe", None)]:
        form = native_form(SOURCE, request)
        async with http.post(f"{server.url}/{op}", data=form, headers={"Api-Key": KEY}) as r:
            assert r.status == 429


async def test_control_endpoint_reads_and_changes_faults(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """GET /_control shows the config; POST applies a partial update or answers 400."""
    async with http.get(f"{server.url}/_control") as response:
        assert (await response.json())["rate_429"] == 0.0
    async with http.post(f"{server.url}/_control", json={"rate_429": 1.0}) as response:
        assert response.status == 200
        assert (await response.json())["rate_429"] == 1.0
    assert (await generate(http, server))[0] == 429
    for bad in ({"rate_429": 2}, {"no_such_fault": 1}, ["rate_429"]):
        async with http.post(f"{server.url}/_control", json=bad) as response:
            assert response.status == 400
    async with http.post(f"{server.url}/_control", data=b"{") as response:
        assert response.status == 400
    assert server.config.rate_429 == 1.0
