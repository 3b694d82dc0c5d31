"""Image URLs (signed, expiring), download faults, and the sample assets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import PNG_SIGNATURE, sniff_format
from pipeline.fake_server.testing import png_size, sample_url

KEY = "fake-key"


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=4)) as server:
        yield server


async def image_url(http: aiohttp.ClientSession, server: FakeServer, key: str = KEY) -> str:
    """The URL of a freshly generated image (one native generate call)."""
    body = {"image_request": {"prompt": "a kite", "aspect_ratio": "ASPECT_3_1"}}
    async with http.post(f"{server.url}/generate", json=body, headers={"Api-Key": key}) as r:
        url: str = (await r.json())["data"][0]["url"]
    return url


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with http.get(url) as response:
        return response.status, response.content_type, await response.read()


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_url_serves_the_png_until_it_expires(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """A URL serves its PNG before exp and 403 AccessDenied "Request has expired" after."""
    server.set_faults(url_ttl_s=60)
    url = await image_url(http, server)
    status, content_type, body = await get(http, url)
    assert (status, content_type) == (200, "image/png")
    assert png_size(body) == (108, 36)
    server.set_faults(clock_offset_s=61)  # time passes on the server's clock
    status, content_type, body = await get(http, url)
    assert (status, content_type) == (403, "application/xml")
    assert b"<Code>AccessDenied</Code>" in body
    assert b"Request has expired" in body


async def test_a_zero_ttl_url_is_born_expired(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """With url_ttl_s 0 the URL is already expired when the client gets it."""
    server.set_faults(url_ttl_s=0)
    status, _, body = await get(http, await image_url(http, server))
    assert status == 403
    assert b"Request has expired" in body


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: with_query(url, sig="0" * 64),
        lambda url: with_query(url, exp=str(int(parse_qs(urlsplit(url).query)["exp"][0]) + 3600)),
        lambda url: url.split("?")[0],
        lambda url: url.replace("/ephemeral/", "/ephemeral/A").replace(".png", "A.png", 1),
    ],
    ids=["sig", "exp", "unsigned", "token"],
)
async def test_tampered_urls_are_denied(
    server: FakeServer, http: aiohttp.ClientSession, tamper: object
) -> None:
    """A changed signature, expiry or token, or no signature at all, gets 403 AccessDenied."""
    url = await image_url(http, server)
    status, _, body = await get(http, tamper(url))  # type: ignore[operator]
    assert status == 403
    assert b"AccessDenied" in body
    assert server.state.stats()["downloads_served"] == 0


async def test_download_latency(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """download_latency_ms delays image GETs."""
    url = await image_url(http, server)
    server.set_faults(download_latency_ms=50)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await get(http, url))[0] == 200
    assert loop.time() - started >= 0.045


async def test_download_truncate(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """rate_download_truncate cuts the PNG short of its Content-Length."""
    url = await image_url(http, server)
    server.set_faults(rate_download_truncate=1.0)
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(http, url)


async def test_download_html(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """rate_download_html answers 200 with an HTML page instead of the image."""
    url = await image_url(http, server)
    server.set_faults(rate_download_html=1.0)
    status, content_type, body = await get(http, url)
    assert (status, content_type) == (200, "text/html")
    assert sniff_format(body) is None


async def test_download_reset(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """rate_download_reset drops the connection with no answer."""
    url = await image_url(http, server)
    server.set_faults(rate_download_reset=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(http, url)


async def test_download_oversize(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """download_oversize_bytes serves a PNG signature followed by that much garbage."""
    url = await image_url(http, server)
    server.set_faults(download_oversize_bytes=3_000_000)
    status, _, body = await get(http, url)
    assert status == 200
    assert body.startswith(PNG_SIGNATURE)
    assert len(body) == 3_000_000 + len(PNG_SIGNATURE)
    stats = server.state.stats()
    assert (stats["downloads"], stats["downloads_served"]) == (1, 0)


@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
async def test_sample_assets_are_deterministic_images(
    server: FakeServer, http: aiohttp.ClientSession, ext: str
) -> None:
    """/_assets/sample serves the same decodable image of the asked size every time."""
    url = sample_url(server.url, "tile", 120, 48, ext)
    status, content_type, body = await get(http, url)
    assert status == 200
    assert content_type == f"image/{'jpeg' if ext == 'jpg' else ext}"
    assert png_size(body) == (120, 48)
    assert (await get(http, url))[2] == body


async def test_sample_padding_and_bad_queries(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """pad appends bytes after the image; bad sizes are 400."""
    status, _, body = await get(http, f"{server.url}/_assets/sample/a.png?w=8&h=8&pad=1000")
    assert status == 200
    assert body.startswith(PNG_SIGNATURE)
    assert len(body) > 1000
    for query in ("w=0", "h=99999", "w=abc"):
        assert (await get(http, f"{server.url}/_assets/sample/a.png?{query}"))[0] == 400


async def test_bytes_asset_is_not_an_image(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """/_assets/bytes/{n} serves exactly n bytes that no image sniffer accepts."""
    status, content_type, body = await get(http, f"{server.url}/_assets/bytes/5000")
    assert (status, content_type, len(body)) == (200, "application/octet-stream", 5000)
    assert sniff_format(body) is None
