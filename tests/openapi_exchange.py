"""Requests to the fake server checked against Ideogram's OpenAPI specs with openapi-core.

The specs are the copies in ``tests/data`` (the April 2026 one for the legacy
routes, the 2026-07 one for V3 and V4). Each spec gives multipart parts
``style: form``; OpenAPI 3.0 says ``style`` is ignored unless the body is
urlencoded, but openapi-core 0.19+ applies it and cannot decode the part, so
it is dropped, as the standard says.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.exceptions import RequestValidationError

from pipeline.fake_server import FakeServer

DATA = Path(__file__).resolve().parent / "data"
LEGACY_SPEC = DATA / "ideogram-openapi.json"
SPEC_2026_07 = DATA / "ideogram-openapi-2026-07.json"
HOST = "https://api.ideogram.ai"
KEY = "fake-key"


def load_spec(path: Path) -> OpenAPI:
    """The spec at ``path``, without ``style`` on its multipart encodings."""
    data = json.loads(path.read_text("utf-8"))
    for item in data["paths"].values():
        for operation in item.values():
            content = operation.get("requestBody", {}).get("content", {})
            for encoding in content.get("multipart/form-data", {}).get("encoding", {}).values():
                encoding.pop("style", None)
    return OpenAPI.from_dict(data)


class Exchange:
    """One request as sent, and the response as received."""

    def __init__(self, path: str, body: bytes, content_type: str, key: str = KEY) -> None:
        self.path = path
        self.body = body
        self.content_type = content_type
        self.headers = {"Api-Key": key}
        self.status = 0
        self.response_body = b""
        self.response_type = ""

    def mock_request(self) -> MockRequest:
        """The request as openapi-core reads it."""
        return MockRequest(
            HOST, "post", self.path, headers=self.headers, data=self.body, content_type=self.content_type
        )

    def mock_response(self) -> MockResponse:
        """The response as openapi-core reads it."""
        return MockResponse(self.response_body, status_code=self.status, content_type=self.response_type)


async def send(http: aiohttp.ClientSession, server: FakeServer, exchange: Exchange) -> Exchange:
    """Send ``exchange`` to the fake server and record its answer in it."""
    headers = {**exchange.headers, "Content-Type": exchange.content_type}
    async with http.post(f"{server.url}{exchange.path}", data=exchange.body, headers=headers) as r:
        exchange.status = r.status
        exchange.response_body = await r.read()
        exchange.response_type = r.content_type
    return exchange


async def answers_declared_error(
    spec: OpenAPI, server: FakeServer, http: aiohttp.ClientSession, exchange: Exchange, expected: int
) -> None:
    """The fake server answers ``expected``, a status the spec declares, in the API's body, unbilled.

    A 400 is ``application/problem+json`` with its status; any other error an ``{"error": ...}``.
    """
    await send(http, server, exchange)
    assert exchange.status == expected, exchange.response_body
    spec.validate_response(exchange.mock_request(), exchange.mock_response())
    body = json.loads(exchange.response_body)
    if expected == 400:
        assert exchange.response_type == "application/problem+json"
        assert body["status"] == 400
    else:
        assert isinstance(body["error"], str)
    assert server.state.stats()["billed"] == 0


async def rejects_what_the_spec_rejects(
    spec: OpenAPI, server: FakeServer, http: aiohttp.ClientSession, exchange: Exchange
) -> None:
    """A request openapi-core finds invalid is answered 400 (as the spec declares), unbilled."""
    with pytest.raises(RequestValidationError):
        spec.validate_request(exchange.mock_request())
    await send(http, server, exchange)
    assert exchange.status == 400, exchange.response_body
    spec.validate_response(exchange.mock_request(), exchange.mock_response())
    assert server.state.stats()["billed"] == 0
