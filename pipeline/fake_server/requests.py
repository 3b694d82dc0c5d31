"""Reading an API call off the wire: JSON or multipart, the source image, validation.

Every problem is a `BadRequest` whose message the dialect sends with 400. The
rules are the real API's, or stricter, and come from the endpoint catalog:
the content type must be one the endpoint takes, the fields must pass the
endpoint's check (`Endpoint.check`: enums, ranges, unknown fields, per-model
rules, required fields), and a source image must be JPEG, PNG or WebP by its
magic bytes, at most 10 MB, and decodable. The proxy also takes
``"image_file": "<url>"`` in JSON and fetches it. Ideogram 3.0 calls (flat
fields, several files) are read by `pipeline.fake_server.flat`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from aiohttp import web

from pipeline import endpoints
from pipeline.api_schema import MAX_SOURCE_BYTES
from pipeline.endpoints import Endpoint
from pipeline.fake_server.images import (
    ALPHA_VARIANT,
    SourceInfo,
    UndecodableImage,
    inspect_source,
    sniff_format,
)
from pipeline.pricing import DEFAULT_PRICES
from pipeline.structured import summary_of

JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"
#: cap on the ``image_request`` part and on JSON bodies
MAX_JSON_BYTES = 1024 * 1024
#: what aiohttp's multipart reader raises on a body that is not well-formed multipart
MALFORMED_MULTIPART = (
    ValueError,
    AssertionError,
    LookupError,
    aiohttp.ClientError,
    asyncio.IncompleteReadError,
)
_CHUNK = 64 * 1024


class BadRequest(Exception):
    """The call is malformed or invalid: answer 400 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Call:
    """A parsed, valid API call."""

    endpoint: Endpoint
    #: the request's fields (legacy: the ``image_request``; describe: its form fields)
    params: dict[str, Any]
    source: SourceInfo | None = None
    #: ``json`` or ``multipart``
    encoding: str = ""
    #: the body's part names (multipart) or keys (JSON), in the order received
    parts: tuple[str, ...] = ()
    #: the sha256 of each file received, by part name (the main image included), in order
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: cached derived values
    _hash: str = field(default="", repr=False)

    @property
    def prompt(self) -> str:
        """The prompt: the text one, else a structured one's summary; "" when the call has none."""
        value = self.params.get("prompt")
        if isinstance(value, str):
            return value
        return self.structured_summary or ""

    @property
    def structured_summary(self) -> str | None:
        """The summary of the structured prompt the call sends (a JSON prompt's description), if any."""
        return summary_of(self.endpoint, self.params)

    @property
    def op(self) -> str:
        """The op called."""
        return self.endpoint.op

    @property
    def images(self) -> int:
        """Images this call produces (an op returning descriptions counts as one)."""
        return self.endpoint.images(self.params)

    @property
    def variant(self) -> int:
        """What tells this op's images from another's of the same seed (its catalog position).

        A transparent op's variant carries `ALPHA_VARIANT`: its URLs serve RGBA PNGs.
        """
        variant = endpoints.ops().index(self.op) % ALPHA_VARIANT
        return variant | ALPHA_VARIANT if self.endpoint.transparent else variant

    @property
    def file_counts(self) -> dict[str, int]:
        """How many files of each role besides the main image."""
        return {name: len(hashes) for name, hashes in self.files.items() if name != self.endpoint.image}

    @property
    def tier(self) -> str | None:
        """The price tier the call runs on."""
        return self.endpoint.tier_of(self.params, self.file_counts)

    @property
    def cost(self) -> Decimal:
        """What the call is billed."""
        return DEFAULT_PRICES.job_cost(self.op, self.tier, self.images)

    @property
    def request_hash(self) -> str:
        """sha256 of op, canonical request and file bytes: equal requests hash equal."""
        if not self._hash:
            canonical = json.dumps(self.params, sort_keys=True, separators=(",", ":"))
            source = self.source.sha256 if self.source else ""
            text = f"{self.op}\n{canonical}\n{source}"
            others = {k: v for k, v in self.files.items() if k != self.endpoint.image}
            if others:
                text += "\n" + json.dumps(others, sort_keys=True)
            self._hash = hashlib.sha256(text.encode()).hexdigest()
        return self._hash


class SourceFetcher:
    """Fetches ``image_file`` URLs for the proxy, with the app's client session."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: Callable[[], float]) -> None:
        self._session = session
        self._timeout_s = timeout_s  # read per fetch: the config may change at runtime

    async def fetch(self, url: str, field: str = "image_file") -> bytes:
        """The bytes at ``url`` (BadRequest if it cannot be fetched or is over 10 MB)."""
        if not url.startswith(("http://", "https://")):
            raise BadRequest(f"{field} must be an http(s) URL of a JPEG, PNG or WebP image")
        try:
            timeout = aiohttp.ClientTimeout(total=self._timeout_s())
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise BadRequest(f"{field} could not be fetched: HTTP {response.status}")
                declared = response.content_length
                if declared is not None and declared > MAX_SOURCE_BYTES:
                    raise BadRequest(_too_big(field))
                return await _read_capped(response.content, MAX_SOURCE_BYTES, _too_big(field))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BadRequest(f"{field} could not be fetched: {str(exc) or type(exc).__name__}") from exc


FETCHER: web.AppKey[SourceFetcher] = web.AppKey("fake_server_fetcher", SourceFetcher)


def _too_big(field: str = "image_file") -> str:
    return f"{field} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MB"


async def _read_capped(stream: aiohttp.StreamReader, limit: int, message: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BadRequest(message)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_call(
    request: web.Request, ep: Endpoint, *, proxy: bool, fetcher: SourceFetcher | None
) -> Call:
    """Parse and validate one legacy call to ``ep`` (BadRequest on any problem)."""
    content_type = request.content_type
    if ep.image is None:
        expect_type(content_type, JSON_TYPE)
        body = await read_json_body(request)
        call = _validated(ep, _fields_of(ep, body), None)
        call.encoding, call.parts = "json", tuple(body)
        return call
    if proxy and content_type == JSON_TYPE:
        return await _proxy_json(request, ep, fetcher)
    expect_type(content_type, MULTIPART_TYPE)
    return await _multipart(request, ep)


def _fields_of(ep: Endpoint, body: dict[str, Any], files: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request fields of a JSON body: ``image_request`` when wrapped, else the body's own."""
    if ep.wrapped:
        _only_keys(body, {"image_request", *files}, required={"image_request", *files})
        return _image_request(body["image_request"])
    _only_keys(body, {*ep.fields, *files}, required=set(files))
    return {k: v for k, v in body.items() if k not in files}


def expect_type(content_type: str, wanted: str) -> None:
    if content_type != wanted:
        shown = content_type or "none"
        expected = "JSON data" if wanted == JSON_TYPE else f"['{wanted}']"
        raise BadRequest(f"Invalid Content-type ({shown}), expected {expected}")


async def read_json_body(request: web.Request) -> dict[str, Any]:
    length = request.content_length
    if length is not None and length <= MAX_JSON_BYTES:
        raw = await request.read()  # the common case, in one read
    else:
        raw = await _read_capped(request.content, MAX_JSON_BYTES, "Request body is too large")
    return _json_object(raw, "Request body")


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _only_keys(body: dict[str, Any], allowed: set[str], *, required: set[str]) -> None:
    missing = sorted(required - body.keys())
    if missing:
        raise BadRequest(f"'{missing[0]}' is a required property")
    unexpected = sorted(body.keys() - allowed)
    if unexpected:
        raise BadRequest(f"Additional properties are not allowed ('{unexpected[0]}' was unexpected)")


def _image_request(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("image_request must be a JSON object")
    return value


def _validated(ep: Endpoint, params: dict[str, Any], source: SourceInfo | None) -> Call:
    problems = ep.check(params)
    if problems:
        where = "image_request" if ep.wrapped else "form"
        raise BadRequest("; ".join(f"{where}.{name}: {message}" for name, message in problems))
    return Call(ep, params, source)


def _source(data: bytes) -> SourceInfo:
    if len(data) > MAX_SOURCE_BYTES:
        raise BadRequest(_too_big())
    if not data:
        raise BadRequest("image_file is empty")
    if sniff_format(data) is None:
        raise BadRequest("image_file must be a JPEG, PNG or WebP image")
    try:
        return inspect_source(data)
    except UndecodableImage as exc:
        raise BadRequest(str(exc)) from exc


async def _proxy_json(request: web.Request, ep: Endpoint, fetcher: SourceFetcher | None) -> Call:
    assert ep.image is not None
    body = await read_json_body(request)
    params = _fields_of(ep, body, (ep.image,))
    url = body[ep.image]
    if not isinstance(url, str):
        raise BadRequest(f"{ep.image} must be a URL string")
    # validate before fetching: a bad request costs the server nothing
    call = _validated(ep, params, None)
    if fetcher is None:
        raise BadRequest(f"{ep.image} URLs are not accepted here")
    call.source = _source(await fetcher.fetch(url))
    call.encoding, call.parts, call.files = "json", tuple(body), {ep.image: (call.source.sha256,)}
    return call


async def _multipart(request: web.Request, ep: Endpoint) -> Call:
    assert ep.image is not None
    text_fields = {"image_request"} if ep.wrapped else set(ep.fields)
    fields: dict[str, bytes] = {}
    names: list[str] = []
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise BadRequest("nested multipart bodies are not supported")
            name = part.name or ""
            names.append(name)
            if name not in text_fields and name != ep.image:
                raise BadRequest(f"unexpected form field {name!r}")
            if name in fields:
                raise BadRequest(f"form field {name!r} given twice")
            limit = MAX_SOURCE_BYTES if name == ep.image else MAX_JSON_BYTES
            fields[name] = await _read_part(part, limit, name)
    except MALFORMED_MULTIPART as exc:
        raise BadRequest(f"malformed multipart body: {str(exc) or type(exc).__name__}") from exc
    required = {"image_request", ep.image} if ep.wrapped else {ep.image}
    missing = sorted(required - fields.keys())
    if missing:
        raise BadRequest(f"'{missing[0]}' is a required property")
    if ep.wrapped:
        params = _image_request(_json_object(fields["image_request"], "image_request"))
    else:
        params = {name: text_of(raw, "form field") for name, raw in fields.items() if name != ep.image}
    call = _validated(ep, params, None)
    call.source = _source(fields[ep.image])
    call.encoding, call.parts, call.files = "multipart", tuple(names), {ep.image: (call.source.sha256,)}
    return call


async def _read_part(part: aiohttp.BodyPartReader, limit: int, name: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BadRequest(_too_big() if limit == MAX_SOURCE_BYTES else f"{name} is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def text_of(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 text") from exc
