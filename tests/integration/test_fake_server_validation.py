"""What the fake server refuses, in each dialect's error shape, and that refusals are free."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import PNG_SIGNATURE, render_sample
from pipeline.fake_server.testing import Dialect, auth_headers, native_form, op_url, sample_url

KEY = "fake-key"
JSON = "application/json"
SOURCE = render_sample("source", 64, 64, "webp")


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=5)) as server:
        yield server


async def post(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    **kwargs: Any,
) -> tuple[int, str, Any]:
    async with http.post(url, headers=headers, **kwargs) as response:
        return response.status, response.content_type, await response.json(content_type=None)


def _big_json() -> io.BytesIO:
    """A JSON body over 1 MB (a BytesIO: aiohttp warns about large raw bodies)."""
    return io.BytesIO(json.dumps({"image_request": {"prompt": "x" * 1_100_000}}).encode())


def assert_native_400(status: int, content_type: str, body: Any, fragment: str) -> None:
    """Connexion-style problem+json carrying the reason."""
    assert (status, content_type) == (400, "application/problem+json")
    assert set(body) == {"detail", "status", "title", "type"}
    assert (body["status"], body["title"], body["type"]) == (400, "Bad Request", "about:blank")
    assert fragment in body["detail"]


def assert_proxy_error(status: int, body: Any, expected: int, code: str, fragment: str) -> None:
    """The proxy's {"error": {"message", "type", "code"}}."""
    assert status == expected
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["code"] == code
    assert fragment in body["error"]["message"]


BAD_GENERATE = [
    ({"prompt": "x", "model": "V_9"}, "image_request.model"),
    ({"prompt": "x", "num_images": 9}, "image_request.num_images"),
    ({"prompt": "x", "seed": -1}, "image_request.seed"),
    ({"prompt": "x", "cfg_scale": 7}, "image_request.cfg_scale"),
    ({"model": "V_2"}, "image_request.prompt"),
    ({"prompt": ""}, "image_request.prompt"),
    ({"prompt": "x", "aspect_ratio": "ASPECT_1_1", "resolution": "RESOLUTION_1024_1024"}, "resolution"),
    ({"prompt": "x", "model": "V_1", "style_type": "ANIME"}, "image_request.style_type"),
    ({"prompt": "x", "model": "V_2A", "negative_prompt": "no"}, "image_request.negative_prompt"),
    ({"prompt": "x", "num_images": "2"}, "image_request.num_images"),
]


@pytest.mark.parametrize(("request_", "fragment"), BAD_GENERATE)
async def test_invalid_image_requests_get_400_in_both_dialects(
    server: FakeServer, http: aiohttp.ClientSession, request_: dict[str, Any], fragment: str
) -> None:
    """Bad enums, ranges, unknown fields, missing prompt and per-model rules are 400s."""
    body = {"image_request": request_}
    native = await post(http, f"{server.url}/generate", {"Api-Key": KEY}, json=body)
    assert_native_400(*native, fragment)
    status, _, proxy = await post(
        http, f"{server.url}/ideogram/generate", auth_headers("crazyrouter", KEY), json=body
    )
    assert_proxy_error(status, proxy, 400, "invalid_request", fragment)
    assert server.state.stats()["billed"] == 0


@pytest.mark.parametrize(
    ("op", "make", "fragment"),
    [
        ("generate", lambda: {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, "JSON"),
        ("generate", lambda: {"json": ["image_request"]}, "object"),
        ("generate", lambda: {"json": {"prompt": "x"}}, "'image_request' is a required"),
        ("generate", lambda: {"json": {"image_request": {"prompt": "x"}, "x": 1}}, "'x' was unexpected"),
        ("generate", lambda: {"data": _big_json(), "headers": {"Content-Type": JSON}}, "too large"),
        ("generate", lambda: {"json": {"image_request": "prompt"}}, "JSON object"),
        ("generate", lambda: {"data": native_form(None, {"prompt": "x"})}, "Content-type"),
        ("remix", lambda: {"json": {"image_request": {"prompt": "x"}}}, "Content-type"),
        ("upscale", lambda: {"data": b"", "headers": {"Content-Type": "text/plain"}}, "Content-type"),
        ("remix", lambda: {"data": native_form(SOURCE, None)}, "'image_request' is a required"),
        ("remix", lambda: {"data": native_form(None, {"prompt": "x"})}, "'image_file' is a required"),
        ("upscale", lambda: {"data": native_form(SOURCE, None)}, "'image_request' is a required"),
        ("describe", lambda: {"data": native_form(None, None, fields={"x": "y"})}, "unexpected form"),
        (
            "describe",
            lambda: {"data": native_form(SOURCE, None, fields={"describe_model_version": "V_9"})},
            "describe_model_version",
        ),
        ("remix", lambda: {"data": native_form(SOURCE, {"prompt": "x", "image_weight": 0})}, "image_weight"),
        ("upscale", lambda: {"data": native_form(SOURCE, {"detail": 101})}, "image_request.detail"),
        ("upscale", lambda: {"data": native_form(SOURCE, {"model": "V_2"})}, "image_request.model"),
        ("remix", lambda: {"data": native_form(b"GIF89a" + bytes(64), {"prompt": "x"})}, "JPEG, PNG or WebP"),
        ("describe", lambda: {"data": native_form(PNG_SIGNATURE + bytes(64), None)}, "decoded"),
        ("describe", lambda: {"data": native_form(b"", None)}, "empty"),
        ("describe", lambda: {"data": native_form(PNG_SIGNATURE + bytes(10 * 1024 * 1024), None)}, "10 MB"),
    ],
)
async def test_malformed_native_bodies_get_400(
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    make: Callable[[], dict[str, Any]],
    fragment: str,
) -> None:
    """Unparseable bodies, wrong content types, missing parts and bad sources are 400s."""
    kwargs = make()
    headers = {"Api-Key": KEY, **kwargs.pop("headers", {})}
    result = await post(http, f"{server.url}/{op}", headers, **kwargs)
    assert_native_400(*result, fragment)
    assert server.state.stats()["billed"] == 0


@pytest.mark.parametrize(
    ("op", "source", "fragment"),
    [
        ("remix", "/_assets/bytes/2000", "JPEG, PNG or WebP"),
        ("upscale", "/_assets/missing.png", "HTTP 404"),
        ("describe", "/_assets/bytes/11000000", "10 MB"),
        ("describe", "/_assets/sample/big.png?w=64&h=64&pad=10485760", "10 MB"),
        ("upscale", "ftp://example.com/a.png", "http(s) URL"),
        ("upscale", "http://127.0.0.1:9/closed.png", "could not be fetched"),
    ],
)
async def test_proxy_url_sources_that_are_not_images_get_400(
    server: FakeServer, http: aiohttp.ClientSession, op: str, source: str, fragment: str
) -> None:
    """The proxy fetches image_file URLs and refuses what is missing, not an image, or too big."""
    url = source if "://" in source else server.url + source
    body: dict[str, Any] = {"image_file": url}
    if op != "describe":
        body["image_request"] = {"prompt": "x"}
    status, _, error = await post(
        http, f"{server.url}/ideogram/{op}", auth_headers("crazyrouter", KEY), json=body
    )
    assert_proxy_error(status, error, 400, "invalid_request", fragment)


async def test_proxy_gives_up_on_slow_image_urls(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """A source URL slower than fetch_timeout_s is a 400, not a hang."""
    body = {"image_request": {"prompt": "x"}}
    async with http.post(f"{server.url}/generate", json=body, headers={"Api-Key": KEY}) as response:
        slow_url = (await response.json())["data"][0]["url"]
    server.set_faults(download_latency_ms=300, fetch_timeout_s=0.05)
    status, _, error = await post(
        http,
        f"{server.url}/ideogram/upscale",
        auth_headers("crazyrouter", KEY),
        json={"image_request": {}, "image_file": slow_url},
    )
    assert_proxy_error(status, error, 400, "invalid_request", "could not be fetched")


async def test_proxy_json_sources_need_a_url_and_an_image_request(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """Proxy remix JSON without image_file or image_request, or with a non-string URL, is 400."""
    url = f"{server.url}/ideogram/remix"
    headers = auth_headers("crazyrouter", KEY)
    image = sample_url(server.url)
    for body, fragment in [
        ({"image_request": {"prompt": "x"}}, "'image_file'"),
        ({"image_file": image}, "'image_request'"),
        ({"image_file": 7, "image_request": {"prompt": "x"}}, "URL string"),
        ({"image_file": image, "image_request": {"prompt": "x", "num_images": 0}}, "num_images"),
    ]:
        status, _, error = await post(http, url, headers, json=body)
        assert_proxy_error(status, error, 400, "invalid_request", fragment)


@pytest.mark.parametrize(
    ("op", "expected"), [("generate", 401), ("describe", 401), ("remix", 403), ("upscale", 403)]
)
@pytest.mark.parametrize("headers", [{}, {"Api-Key": "wrong"}, {"Authorization": f"Bearer {KEY}"}], ids=str)
async def test_native_rejects_a_missing_or_wrong_key(
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    expected: int,
    headers: dict[str, str],
) -> None:
    """No key, a wrong key or a Bearer header: 401 on generate/describe, 403 on remix/upscale."""
    form = native_form(SOURCE, {"prompt": "x"} if op != "describe" else None)
    kwargs: dict[str, Any] = (
        {"json": {"image_request": {"prompt": "x"}}} if op == "generate" else {"data": form}
    )
    status, content_type, body = await post(http, f"{server.url}/{op}", headers, **kwargs)
    assert (status, content_type) == (expected, "application/json")
    assert set(body) == {"error"}
    assert server.state.log[-1].billed is False


@pytest.mark.parametrize("op", ["generate", "remix", "upscale", "describe"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Api-Key": KEY}, {"Authorization": KEY}],
    ids=str,
)
async def test_proxy_rejects_a_missing_or_wrong_key(
    server: FakeServer, http: aiohttp.ClientSession, op: str, headers: dict[str, str]
) -> None:
    """The proxy wants Authorization: Bearer KEY, else 401 invalid_api_key."""
    status, _, body = await post(
        http, op_url(server.url, "crazyrouter", op), headers, json={"image_request": {"prompt": "x"}}
    )
    assert_proxy_error(status, body, 401, "invalid_api_key", "")


async def test_auth_is_checked_before_the_body(server: FakeServer, http: aiohttp.ClientSession) -> None:
    """A bad key with a bad body is an auth error, as Connexion checks security first."""
    status, _, _ = await post(http, f"{server.url}/generate", {"Api-Key": "no"}, data=b"{")
    assert status == 401


@pytest.mark.parametrize("dialect", ["ideogram", "crazyrouter"])
async def test_refusals_are_logged_but_not_billed(
    server: FakeServer, http: aiohttp.ClientSession, dialect: Dialect
) -> None:
    """A 400 is logged with its message and no cost."""
    url = op_url(server.url, dialect, "generate")
    await post(http, url, auth_headers(dialect, KEY), json={"image_request": {"prompt": 1}})
    entry = server.state.log[-1]
    assert (entry.status, entry.billed, entry.cost, entry.dialect) == (400, False, 0, dialect)
    assert entry.message is not None
    assert "prompt" in entry.message
