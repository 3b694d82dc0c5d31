"""The native dialect checked against Ideogram's own OpenAPI spec with openapi-core.

Responses of every op, success and error, must be ones the spec declares, with
bodies matching the spec's schemas where it gives one. Requests the spec
rejects must be rejected by the fake server with 400 (the server may be
stricter than the spec, never laxer).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openapi_core import OpenAPI
from openapi_core.templating.responses.exceptions import ResponseNotFound
from openapi_core.validation.request.exceptions import RequestValidationError

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import render_sample
from pipeline.fake_server.testing import form_bytes, native_form
from tests.openapi_exchange import KEY, LEGACY_SPEC, Exchange, load_spec, send

SOURCE = render_sample("openapi", 96, 64, "jpeg")


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    """Ideogram's OpenAPI 3.0 spec of April 2026."""
    return load_spec(LEGACY_SPEC)


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=2)) as server:
        yield server


async def build(
    op: str,
    image_request: dict[str, Any] | None = None,
    *,
    image: bytes | None = SOURCE,
    fields: dict[str, str] | None = None,
    key: str = KEY,
) -> Exchange:
    """The bytes a native client sends for ``op``."""
    if op == "generate":
        body = json.dumps({"image_request": image_request}).encode()
        return Exchange(f"/{op}", body, "application/json", key)
    form = native_form(image, image_request, fields=fields)
    body, content_type = await form_bytes(form)
    return Exchange(f"/{op}", body, content_type, key)


VALID_REQUESTS: list[tuple[str, dict[str, Any] | None, dict[str, str] | None]] = [
    ("generate", {"prompt": "a cat", "aspect_ratio": "ASPECT_3_2", "num_images": 2}, None),
    ("generate", {"prompt": "a cat", "style_type": "DESIGN", "seed": 9}, None),
    ("remix", {"prompt": "a cat", "image_weight": 70, "model": "V_2_TURBO"}, None),
    ("upscale", {}, None),
    ("upscale", {"resemblance": 55, "detail": 90, "prompt": "sharp"}, None),
    ("describe", None, None),
    ("describe", None, {"describe_model_version": "V_2"}),
]


@pytest.mark.parametrize(("op", "image_request", "fields"), VALID_REQUESTS)
async def test_successes_match_the_spec(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    image_request: dict[str, Any] | None,
    fields: dict[str, str] | None,
) -> None:
    """Valid requests (per the spec) get 200 bodies that validate against the spec."""
    exchange = await build(op, image_request, fields=fields)
    spec.validate_request(exchange.mock_request())
    await send(http, server, exchange)
    assert exchange.status == 200
    spec.validate_response(exchange.mock_request(), exchange.mock_response())


async def test_withheld_images_match_the_spec(
    spec: OpenAPI, server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """An image withheld by the safety filter (url null) still validates."""
    server.set_faults(withheld_word="forbidden")
    exchange = await send(http, server, await build("generate", {"prompt": "forbidden fruit"}))
    assert json.loads(exchange.response_body)["data"][0]["url"] is None
    spec.validate_response(exchange.mock_request(), exchange.mock_response())


ERROR_CASES = [
    # (op, image_request, faults, key, expected status)
    ("generate", {"prompt": "x", "model": "V_1", "style_type": "ANIME"}, {}, KEY, 400),
    (
        "remix",
        {"prompt": "x", "aspect_ratio": "ASPECT_1_1", "resolution": "RESOLUTION_1024_1024"},
        {},
        KEY,
        400,
    ),
    ("generate", {"prompt": "x"}, {}, "wrong", 401),
    ("remix", {"prompt": "x"}, {}, "wrong", 403),
    ("upscale", {}, {}, "wrong", 403),
    ("generate", {"prompt": "bad thing"}, {"unsafe_word": "bad"}, KEY, 422),
    ("remix", {"prompt": "bad thing"}, {"unsafe_word": "bad"}, KEY, 422),
    ("upscale", {"prompt": "bad thing"}, {"unsafe_word": "bad"}, KEY, 422),
    ("generate", {"prompt": "x"}, {"rate_429": 1.0}, KEY, 429),
    ("remix", {"prompt": "x", "num_images": 3}, {"inflight_limit": 2}, KEY, 429),
    ("upscale", {}, {"rate_429": 1.0}, KEY, 429),
    ("describe", None, {"rate_429": 1.0}, KEY, 429),
]


@pytest.mark.parametrize(("op", "image_request", "faults", "key", "expected"), ERROR_CASES)
async def test_errors_are_declared_by_the_spec(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    image_request: dict[str, Any] | None,
    faults: dict[str, Any],
    key: str,
    expected: int,
) -> None:
    """400, 401/403, 422 and 429 are statuses the spec lists for that path; 422 bodies match."""
    server.set_faults(**faults)
    exchange = await send(http, server, await build(op, image_request, key=key))
    assert exchange.status == expected
    spec.validate_response(exchange.mock_request(), exchange.mock_response())
    body = json.loads(exchange.response_body)
    if expected == 400:
        assert exchange.response_type == "application/problem+json"
        assert body["status"] == 400
    else:
        assert isinstance(body["error"], str)
    if expected == 429:
        assert body["reject_reason"] == "inflight_limit"
        assert isinstance(body["max_inflight_requests"], int)


@pytest.mark.parametrize(
    ("op", "faults", "key", "expected"),
    [("generate", {"balance_usd": 0.0}, KEY, 402), ("describe", {}, "wrong", 401)],
)
async def test_documented_errors_missing_from_the_legacy_spec(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    faults: dict[str, Any],
    key: str,
    expected: int,
) -> None:
    """402 (docs: insufficient funds) and 401 on describe (docs: bad key) are not in the spec."""
    server.set_faults(**faults)
    exchange = await send(
        http, server, await build(op, {"prompt": "x"} if op != "describe" else None, key=key)
    )
    assert exchange.status == expected
    with pytest.raises(ResponseNotFound):
        spec.validate_response(exchange.mock_request(), exchange.mock_response())
    body = json.loads(exchange.response_body)
    assert isinstance(body["error"], str)
    if expected == 402:
        assert body["reject_reason"] == "insufficient_funds"


SPEC_REJECTS: list[tuple[str, dict[str, Any] | None, bytes | None, dict[str, str] | None]] = [
    ("generate", {"prompt": "x", "model": "V_9"}, None, None),
    ("generate", {"prompt": "x", "num_images": 9}, None, None),
    ("generate", {"prompt": "x", "num_images": 0}, None, None),
    ("generate", {"prompt": "x", "seed": -1}, None, None),
    ("generate", {"prompt": "x", "aspect_ratio": "16:9"}, None, None),
    ("generate", {"model": "V_2"}, None, None),
    ("generate", {"prompt": 42}, None, None),
    ("remix", {"prompt": "x", "image_weight": 0}, SOURCE, None),
    ("remix", {"image_weight": 50}, SOURCE, None),
    ("remix", {"prompt": "x", "style_type": "PHOTO"}, SOURCE, None),
    ("remix", {"prompt": "x"}, None, None),
    ("upscale", {"detail": 101}, SOURCE, None),
    ("upscale", {"resemblance": 0}, SOURCE, None),
    ("upscale", {"num_images": 9}, SOURCE, None),
    ("upscale", None, SOURCE, None),
    ("describe", None, SOURCE, {"describe_model_version": "V_9"}),
    ("describe", None, None, None),
]


@pytest.mark.parametrize(("op", "image_request", "image", "fields"), SPEC_REJECTS)
async def test_requests_the_spec_rejects_are_rejected_with_400(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    image_request: dict[str, Any] | None,
    image: bytes | None,
    fields: dict[str, str] | None,
) -> None:
    """Whatever openapi-core finds invalid against the spec, the fake server answers 400."""
    if op == "describe" and image is None:
        fields = {"describe_model_version": "V_3"}  # a form without the required file
    exchange = await build(op, image_request, image=image, fields=fields)
    with pytest.raises(RequestValidationError):
        spec.validate_request(exchange.mock_request())
    await send(http, server, exchange)
    assert exchange.status == 400
    spec.validate_response(exchange.mock_request(), exchange.mock_response())
    assert server.state.stats()["billed"] == 0
