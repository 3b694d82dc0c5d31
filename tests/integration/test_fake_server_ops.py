"""Every op in both dialects over a real socket: shapes, images, seeds, prompts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import render_sample
from pipeline.fake_server.testing import (
    Dialect,
    auth_headers,
    native_form,
    op_url,
    png_size,
    sample_url,
)

KEY = "fake-key"
SOURCE = render_sample("source", 320, 180, "png")  # 16:9 landscape
DIALECTS: list[Dialect] = ["ideogram", "crazyrouter"]
#: how each dialect may send a source: the native API takes files only
SOURCE_CASES = [("ideogram", "multipart"), ("crazyrouter", "multipart"), ("crazyrouter", "url")]


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=11)) as server:
        yield server


async def call(
    http: aiohttp.ClientSession,
    server: FakeServer,
    dialect: Dialect,
    op: str,
    image_request: dict[str, Any] | None = None,
    *,
    source: str = "multipart",
    fields: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """POST one op: JSON for generate, else multipart or (proxy) JSON with a URL."""
    url = op_url(server.url, dialect, op)
    headers = auth_headers(dialect, KEY)
    kwargs: dict[str, Any]
    if op == "generate":
        kwargs = {"json": {"image_request": image_request}}
    elif source == "url":
        body: dict[str, Any] = {"image_file": sample_url(server.url, "src", 320, 180, "jpg")}
        if op != "describe":
            body["image_request"] = image_request
        body.update(fields or {})
        kwargs = {"json": body}
    else:
        request = image_request if op != "describe" else None
        kwargs = {"data": native_form(SOURCE, request, fields=fields)}
    async with http.post(url, headers=headers, **kwargs) as response:
        return response.status, await response.json(content_type=None), response


async def download_sizes(http: aiohttp.ClientSession, body: dict[str, Any]) -> list[tuple[int, int]]:
    sizes = []
    for item in body["data"]:
        async with http.get(item["url"]) as response:
            assert response.status == 200
            assert response.content_type == "image/png"
            sizes.append(png_size(await response.read()))
    return sizes


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("aspect", "expected"),
    [("ASPECT_16_9", (1312, 736)), ("ASPECT_1_3", (576, 1728)), ("ASPECT_4_3", (1152, 864))],
)
async def test_generate_returns_pngs_of_the_aspect_ratio(
    server: FakeServer,
    http: aiohttp.ClientSession,
    dialect: Dialect,
    aspect: str,
    expected: tuple[int, int],
) -> None:
    """Generate reports the real resolution and serves PNGs of its proportions, 1/16 size."""
    request = {"prompt": "a lighthouse", "aspect_ratio": aspect, "num_images": 2}
    status, body, _ = await call(http, server, dialect, "generate", request)
    assert status == 200
    assert [item["resolution"] for item in body["data"]] == [f"{expected[0]}x{expected[1]}"] * 2
    sizes = await download_sizes(http, body)
    assert sizes == [(expected[0] // 16, expected[1] // 16)] * 2


@pytest.mark.parametrize(("dialect", "source"), SOURCE_CASES)
async def test_remix_returns_pngs_of_the_requested_aspect(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect, source: str
) -> None:
    """Remix (native multipart, proxy multipart or proxy JSON with a URL) crops to the aspect."""
    request = {"prompt": "in anime style", "aspect_ratio": "ASPECT_9_16", "image_weight": 40}
    status, body, _ = await call(http, server, dialect, "remix", request, source=source)
    assert status == 200
    assert body["data"][0]["resolution"] == "736x1312"
    assert await download_sizes(http, body) == [(46, 82)]


@pytest.mark.parametrize(("dialect", "source"), SOURCE_CASES)
async def test_upscale_doubles_the_source_resolution(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect, source: str
) -> None:
    """Upscale reports the source size and twice it, and serves a PNG of its proportions."""
    status, body, _ = await call(http, server, dialect, "upscale", {}, source=source)
    assert status == 200
    item = body["data"][0]
    assert item["resolution"] == "320x180"
    assert item["upscaled_resolution"] == "640x360"
    assert await download_sizes(http, body) == [(40, 22)]


@pytest.mark.parametrize(("dialect", "source"), SOURCE_CASES)
async def test_describe_returns_descriptions_of_the_image(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect, source: str
) -> None:
    """Describe answers one or two texts naming the source's size, the same each time."""
    fields = {"describe_model_version": "V_3"}
    status, body, _ = await call(http, server, dialect, "describe", source=source, fields=fields)
    assert status == 200
    assert set(body) == {"descriptions"}
    assert 1 <= len(body["descriptions"]) <= 2
    assert "320x180" in body["descriptions"][0]["text"]
    again = await call(http, server, dialect, "describe", source=source, fields=fields)
    assert again[1] == body


async def test_native_shape_iso_created_link_header_and_safety_flag(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """Native answers an ISO created, is_image_safe on every image, and a successor Link."""
    request = {"prompt": "a fox", "style_type": "ANIME", "seed": 5}
    status, body, response = await call(http, server, "ideogram", "generate", request)
    assert status == 200
    assert datetime.fromisoformat(body["created"]).tzinfo is not None
    item = body["data"][0]
    assert item["is_image_safe"] is True
    assert item["style_type"] == "ANIME"
    assert 'rel="successor-version"' in response.headers["Link"]
    assert "aiohttp" not in response.headers.get("Server", "")


async def test_proxy_shape_integer_created_and_no_safety_flag(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """The proxy answers an integer created and leaves is_image_safe out of safe images."""
    status, body, response = await call(http, server, "crazyrouter", "generate", {"prompt": "a"})
    assert status == 200
    assert isinstance(body["created"], int)
    assert set(body["data"][0]) == {"url", "prompt", "resolution", "seed"}
    assert "Link" not in response.headers


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_seeds_count_up_and_repeat_the_same_pixels(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """Image i of a seeded request has seed+i; the same seed gives byte-identical PNGs."""
    request = {"prompt": "a tree", "seed": 2147483646, "num_images": 3}
    _, first, _ = await call(http, server, dialect, "generate", request)
    _, second, _ = await call(http, server, dialect, "generate", request)
    assert [item["seed"] for item in first["data"]] == [2147483646, 2147483647, 0]
    assert first["data"][0]["url"] != second["data"][0]["url"]
    for a, b in zip(first["data"], second["data"], strict=True):
        async with http.get(a["url"]) as ra, http.get(b["url"]) as rb:
            assert await ra.read() == await rb.read()


async def test_unseeded_requests_get_distinct_random_seeds(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """Without a seed every image gets its own seed."""
    _, body, _ = await call(http, server, "ideogram", "generate", {"prompt": "x", "num_images": 4})
    seeds = [item["seed"] for item in body["data"]]
    assert len(set(seeds)) == 4
    assert all(0 <= s <= 2147483647 for s in seeds)


@pytest.mark.parametrize(("option", "enhanced"), [("ON", True), ("AUTO", True), (None, True), ("OFF", False)])
async def test_magic_prompt_enhances_the_returned_prompt(
    server: FakeServer, http: aiohttp.ClientSession, option: str | None, enhanced: bool
) -> None:
    """MagicPrompt ON or AUTO (the default) returns a longer prompt; OFF returns it as sent."""
    request: dict[str, Any] = {"prompt": "a boat"}
    if option:
        request["magic_prompt_option"] = option
    _, body, _ = await call(http, server, "ideogram", "generate", request)
    prompt = body["data"][0]["prompt"]
    assert (prompt != "a boat") is enhanced
    assert prompt.startswith("a boat")


async def test_resolution_parameter_sets_the_size(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """RESOLUTION_W_H on a V_2 model is reported as WxH and served at 1/16."""
    request = {"prompt": "x", "resolution": "RESOLUTION_1408_576", "model": "V_2_TURBO"}
    _, body, _ = await call(http, server, "ideogram", "generate", request)
    assert body["data"][0]["resolution"] == "1408x576"
    assert await download_sizes(http, body) == [(88, 36)]


async def test_native_upscale_accepts_an_empty_image_request(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """Upscale with image_request "{}" is valid; its prompt describes the source."""
    status, body, _ = await call(http, server, "ideogram", "upscale", {})
    assert status == 200
    assert "320x180" in body["data"][0]["prompt"]
