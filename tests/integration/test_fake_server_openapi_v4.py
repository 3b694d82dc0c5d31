"""The fake server's Ideogram 4.0 routes checked against the 2026-07 OpenAPI spec with openapi-core.

Requests built as a native client sends them (JSON for generate, with a text
or a JSON prompt; flat multipart with the image for remix, image-to-image and
describe) must validate against the spec, and their answers too — a
describe's ``json_prompt`` against ``V4JsonPrompt``; requests the spec
rejects are answered 400 (the server may be stricter, never laxer). As in the
V3 test, multipart parts that the schema types as booleans or integers are
text to openapi-core, so requests carrying them are not validated here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from openapi_core import OpenAPI

from pipeline.api_schema_v4 import json_prompt_example
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import render_sample
from tests.integration.test_fake_server_openapi_v3 import Files, build
from tests.openapi_exchange import (
    KEY,
    SPEC_2026_07,
    answers_declared_error,
    load_spec,
    rejects_what_the_spec_rejects,
    send,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

SQUARE = render_sample("v4-square", 48, 48, "png")
WIDE = render_sample("v4-wide", 64, 48, "jpeg")
PROMPT = json_prompt_example()


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    """The 2026-07 spec."""
    return load_spec(SPEC_2026_07)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[FakeServer]:
    """One fake server for the module."""
    async with FakeServer(FaultConfig(seed=5)) as fake:
        yield fake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session for the module."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(autouse=True)
def fresh(server: FakeServer) -> None:
    """Each test starts from the server's own config, log and counters."""
    server.state.config = FaultConfig(seed=5)
    server.state.reset()


VALID: list[tuple[str, dict[str, Any], Files | None]] = [
    ("v4-generate", {"text_prompt": "a cat", "rendering_speed": "TURBO", "resolution": "1280x720"}, None),
    ("v4-generate", {"json_prompt": PROMPT, "rendering_speed": "QUALITY"}, None),
    ("v4-generate", {"json_prompt": PROMPT}, []),
    ("v4-remix", {"text_prompt": "a cat in blue", "rendering_speed": "TURBO"}, [("image", WIDE)]),
    ("v4-image-to-image", {"prompt": "in pencil", "resolution": "1024x960"}, [("image", SQUARE)]),
    ("v4-image-to-image", {}, [("image", WIDE)]),
    ("v4-describe", {}, [("image_file", SQUARE)]),
    ("v4-describe", {"include_style_descriptions": "true", "include_tags": "true"}, [("image_file", WIDE)]),
    ("v4-describe", {"include_bbox": "false"}, [("image_file", WIDE)]),
]


@pytest.mark.parametrize(("op", "fields", "files"), VALID)
async def test_v4_successes_match_the_spec(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    fields: dict[str, Any],
    files: Files | None,
) -> None:
    """Requests valid per the spec get 200 bodies that validate against the V4 response schemas."""
    exchange = await build(op, fields, files)
    if not any(value in ("true", "false") for value in fields.values()):
        spec.validate_request(exchange.mock_request())
    await send(http, server, exchange)
    assert exchange.status == 200, exchange.response_body
    spec.validate_response(exchange.mock_request(), exchange.mock_response())
    if op == "v4-describe":
        described = json.loads(exchange.response_body)["json_prompt"]
        assert ("style_description" in described) == ("include_style_descriptions" in fields)
        assert ("tags" in described) == ("include_tags" in fields)
        boxed = ["bbox" in element for element in described["compositional_deconstruction"]["elements"]]
        assert set(boxed) == {"include_bbox" not in fields}


async def test_v4_describe_answers_the_same_image_the_same_way(
    server: FakeServer, http: aiohttp.ClientSession
) -> None:
    """The fake describe is a pure function of the image: the same bytes, the same json_prompt."""
    answers = []
    for image in (SQUARE, SQUARE, WIDE):
        exchange = await send(http, server, await build("v4-describe", {}, [("image_file", image)]))
        answers.append(json.loads(exchange.response_body)["json_prompt"])
    assert answers[0] == answers[1] != answers[2]


ERRORS: list[tuple[str, dict[str, Any], Files | None, dict[str, Any], str, int]] = [
    ("v4-generate", {"text_prompt": "x", "json_prompt": PROMPT}, None, {}, KEY, 400),
    ("v4-generate", {"rendering_speed": "TURBO"}, None, {}, KEY, 400),
    ("v4-generate", {"text_prompt": "x", "rendering_speed": "FLASH"}, None, {}, KEY, 400),
    ("v4-generate", {"prompt": "the manifest's name, not the API's"}, None, {}, KEY, 400),
    ("v4-image-to-image", {"rendering_speed": "FLASH"}, [("image", SQUARE)], {}, KEY, 400),
    ("v4-generate", {"text_prompt": "x"}, None, {}, "wrong", 401),
    ("v4-remix", {"text_prompt": "x"}, [("image", SQUARE)], {}, "wrong", 401),
    ("v4-generate", {"text_prompt": "bad thing"}, None, {"unsafe_word": "bad"}, KEY, 422),
    (
        "v4-generate",
        {"json_prompt": {**PROMPT, "high_level_description": "bad"}},
        None,
        {"unsafe_word": "bad"},
        KEY,
        422,
    ),
    ("v4-remix", {"text_prompt": "x"}, [("image", SQUARE)], {"rate_429": 1.0}, KEY, 429),
    ("v4-describe", {}, [("image_file", SQUARE)], {"rate_429": 1.0}, KEY, 429),
]


@pytest.mark.parametrize(("op", "fields", "files", "faults", "key", "expected"), ERRORS)
async def test_v4_errors_are_declared_by_the_spec(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    fields: dict[str, Any],
    files: Files | None,
    faults: dict[str, Any],
    key: str,
    expected: int,
) -> None:
    """400 (exactly one prompt, no FLASH), 401, 422 and 429 are statuses the spec lists, in native bodies."""
    server.set_faults(**faults)
    await answers_declared_error(spec, server, http, await build(op, fields, files, key), expected)


def _broken(**changes: Any) -> dict[str, Any]:
    """The example JSON prompt with its composition changed."""
    return {**PROMPT, "compositional_deconstruction": {**PROMPT["compositional_deconstruction"], **changes}}


SPEC_REJECTS: list[tuple[str, dict[str, Any], Files | None]] = [
    ("v4-generate", {"text_prompt": "x", "resolution": "1000x1000"}, None),
    ("v4-generate", {"json_prompt": {"high_level_description": "x"}}, None),
    (
        "v4-generate",
        {"json_prompt": _broken(elements=[{"type": "obj", "desc": "d", "bbox": [0, 0, 2000, 5]}])},
        None,
    ),
    ("v4-generate", {"json_prompt": _broken(elements=[{"type": "text", "desc": "no text"}])}, None),
    ("v4-generate", {"text_prompt": "x", "rendering_speed": "SLOW"}, None),
    ("v4-remix", {"rendering_speed": "TURBO"}, [("image", SQUARE)]),
    ("v4-remix", {"text_prompt": "x"}, []),
    ("v4-image-to-image", {"resolution": "2048x2048"}, [("image", SQUARE)]),
    ("v4-describe", {}, []),
]


@pytest.mark.parametrize(("op", "fields", "files"), SPEC_REJECTS)
async def test_v4_requests_the_spec_rejects_are_rejected_with_400(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    fields: dict[str, Any],
    files: Files | None,
) -> None:
    """Whatever openapi-core finds invalid against the 2026-07 spec, the fake server answers 400."""
    await rejects_what_the_spec_rejects(spec, server, http, await build(op, fields, files))
