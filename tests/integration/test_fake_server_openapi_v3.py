"""The fake server's Ideogram 3.0 routes checked against the 2026-07 OpenAPI spec with openapi-core.

Requests built as a native client sends them (flat multipart with repeated
parts and a JSON ``color_palette`` part, or JSON for the ops without files)
must validate against the spec, and their answers too; requests the spec
rejects are answered 400 (the server may be stricter, never laxer).

openapi-core reads a multipart part as text and does not convert it to the
schema's type (``num_images=2`` fails as "not of type integer"), so the
requests validated here leave integer fields out; their ranges are checked
by `tests/integration/test_v3_validation.py` and the fake server's own check.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openapi_core import OpenAPI

from pipeline.endpoints import endpoint
from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.fake_server.images import render_sample
from pipeline.fake_server.testing import form_bytes
from tests.openapi_exchange import (
    KEY,
    SPEC_2026_07,
    Exchange,
    answers_declared_error,
    load_spec,
    rejects_what_the_spec_rejects,
    send,
)

SQUARE = render_sample("square", 48, 48, "png")
WIDE = render_sample("wide", 64, 48, "jpeg")
MASK = render_sample("mask", 48, 48, "png")
REFERENCE = render_sample("reference", 16, 16, "webp")

#: a file part: (part name, bytes)
Files = list[tuple[str, bytes]]


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    """The 2026-07 spec."""
    return load_spec(SPEC_2026_07)


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer(FaultConfig(seed=5)) as server:
        yield server


async def build(op: str, fields: dict[str, Any], files: Files | None = None, key: str = KEY) -> Exchange:
    """The bytes a native client sends: JSON without files (where the op takes it), else multipart."""
    path = endpoint(op).native_path
    if files is None:
        return Exchange(path, json.dumps(fields).encode(), "application/json", key)
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                form.add_field(name, json.dumps(item), content_type="application/json")
            else:
                form.add_field(name, str(item))
    for name, data in files:
        form.add_field(
            name, io.BytesIO(data), filename=f"{name}.bin", content_type="application/octet-stream"
        )
    body, content_type = await form_bytes(form)
    return Exchange(path, body, content_type, key)


VALID: list[tuple[str, dict[str, Any], Files | None]] = [
    (
        "v3-generate",
        {"prompt": "a cat", "aspect_ratio": "16x9", "rendering_speed": "TURBO", "num_images": 2},
        None,
    ),
    ("v3-generate", {"prompt": "a cat", "style_preset": "BAUHAUS", "magic_prompt": "OFF"}, None),
    ("v3-generate", {"prompt": "a cat"}, [("style_reference_images", REFERENCE)] * 2),
    (
        "v3-remix",
        {"prompt": "a cat", "color_palette": {"name": "PASTEL"}, "style_type": "REALISTIC"},
        [
            ("image", WIDE),
            ("character_reference_images", REFERENCE),
            ("character_reference_images_mask", REFERENCE),
        ],
    ),
    (
        "v3-edit",
        {"prompt": "a door", "style_codes": ["AAFF5733", "0133FF57"]},
        [("image", SQUARE), ("mask", MASK)],
    ),
    ("v3-reframe", {"resolution": "1312x736"}, [("image", SQUARE)]),
    (
        "v3-replace-background",
        {"prompt": "a beach"},
        [("image", WIDE), ("style_reference_images", REFERENCE)],
    ),
    (
        "v3-generate-transparent",
        {"prompt": "a logo", "upscale_factor": "X2", "rendering_speed": "QUALITY"},
        None,
    ),
]


@pytest.mark.parametrize(("op", "fields", "files"), VALID)
async def test_v3_successes_match_the_spec(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    fields: dict[str, Any],
    files: Files | None,
) -> None:
    """Requests valid per the spec get 200 bodies that validate against ImageGenerationResponseV3."""
    exchange = await build(op, fields, files)
    if "num_images" not in fields:
        spec.validate_request(exchange.mock_request())
    await send(http, server, exchange)
    assert exchange.status == 200, exchange.response_body
    spec.validate_response(exchange.mock_request(), exchange.mock_response())


ERRORS: list[tuple[str, dict[str, Any], Files | None, dict[str, Any], str, int]] = [
    ("v3-generate", {"prompt": "x", "aspect_ratio": "1x1", "resolution": "1024x1024"}, None, {}, KEY, 400),
    ("v3-generate-transparent", {"prompt": "x", "rendering_speed": "FLASH"}, None, {}, KEY, 400),
    ("v3-edit", {"prompt": "x"}, [("image", WIDE), ("mask", MASK)], {}, KEY, 400),
    ("v3-reframe", {"resolution": "1312x736"}, [("image", WIDE)], {}, KEY, 400),
    ("v3-generate", {"prompt": "x"}, None, {}, "wrong", 401),
    ("v3-remix", {"prompt": "x"}, [("image", SQUARE)], {}, "wrong", 403),
    ("v3-edit", {"prompt": "x"}, [("image", SQUARE), ("mask", MASK)], {}, "wrong", 401),
    ("v3-generate", {"prompt": "bad thing"}, None, {"unsafe_word": "bad"}, KEY, 422),
    ("v3-replace-background", {"prompt": "bad"}, [("image", SQUARE)], {"unsafe_word": "bad"}, KEY, 422),
    ("v3-reframe", {"resolution": "1024x1024"}, [("image", SQUARE)], {"rate_429": 1.0}, KEY, 429),
]


@pytest.mark.parametrize(("op", "fields", "files", "faults", "key", "expected"), ERRORS)
async def test_v3_errors_are_declared_by_the_spec(
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
    """400 (the spec's prose rules), 401/403, 422 and 429 are statuses the spec lists for the path."""
    server.set_faults(**faults)
    await answers_declared_error(spec, server, http, await build(op, fields, files, key), expected)


SPEC_REJECTS: list[tuple[str, dict[str, Any], Files | None]] = [
    ("v3-generate", {"prompt": "x", "aspect_ratio": "16:9"}, None),
    ("v3-generate", {"prompt": "x", "style_preset": "PHOTO"}, None),
    ("v3-generate", {"aspect_ratio": "1x1"}, None),
    ("v3-generate", {"prompt": "x", "resolution": "1000x1000"}, None),
    ("v3-remix", {"prompt": "x", "style_type": "ANIME"}, [("image", SQUARE)]),
    ("v3-remix", {"prompt": "x"}, [("character_reference_images", REFERENCE)]),
    ("v3-edit", {"prompt": "x"}, [("image", SQUARE)]),
    ("v3-edit", {"prompt": "x", "style_codes": ["XYZ"]}, [("image", SQUARE), ("mask", MASK)]),
    ("v3-reframe", {"rendering_speed": "TURBO"}, [("image", SQUARE)]),
    ("v3-replace-background", {"prompt": "x", "magic_prompt": "MAYBE"}, [("image", SQUARE)]),
    ("v3-generate-transparent", {"prompt": "x", "upscale_factor": "X3"}, None),
]


@pytest.mark.parametrize(("op", "fields", "files"), SPEC_REJECTS)
async def test_v3_requests_the_spec_rejects_are_rejected_with_400(
    spec: OpenAPI,
    server: FakeServer,
    http: aiohttp.ClientSession,
    op: str,
    fields: dict[str, Any],
    files: Files | None,
) -> None:
    """Whatever openapi-core finds invalid against the 2026-07 spec, the fake server answers 400."""
    await rejects_what_the_spec_rejects(spec, server, http, await build(op, fields, files))
