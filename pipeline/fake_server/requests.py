"""Reading an API call off the wire: JSON or multipart, the source image, validation.

Every problem is a `BadRequest` whose message the dialect sends with 400. The
rules are the real API's, or stricter: the content type must be the one the
endpoint takes, the ``image_request`` must pass `pipeline.api_schema.check_request`
(enums, ranges, unknown fields, per-model rules, the required prompt), and a
source image must be JPEG, PNG or WebP by its magic bytes, at most 10 MB, and
decodable. The proxy also takes ``"image_file": "<url>"`` in JSON and fetches it.
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

from pipeline.api_schema import MAX_SOURCE_BYTES, check_request, effective_model, num_images
from pipeline.fake_server.images import SourceInfo, UndecodableImage, inspect_source, sniff_format
from pipeline.pricing import DEFAULT_PRICES

JSON_TYPE = "application/json"
MULTIPART_TYPE = "multipart/form-data"
#: cap on the ``image_request`` part and on JSON bodies
MAX_JSON_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
#: the form fields of each multipart op, and which are required
_FORM_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "remix": (
        frozenset({"image_request", "image_file"}),
        frozenset({"image_request", "image_file"}),
    ),
    "upscale": (
        frozenset({"image_request", "image_file"}),
        frozenset({"image_request", "image_file"}),
    ),
    "describe": (frozenset({"image_file", "describe_model_version"}), frozenset({"image_file"})),
}


class BadRequest(Exception):
    """The call is malformed or invalid: answer 400 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Call:
    """A parsed, valid API call."""

    op: str
    #: the ``image_request`` (describe: its form fields besides the image)
    params: dict[str, Any]
    source: SourceInfo | None = None
    #: cached derived values
    _hash: str = field(default="", repr=False)

    @property
    def prompt(self) -> str:
        """The prompt, or "" when the op has none."""
        value = self.params.get("prompt")
        return value if isinstance(value, str) else ""

    @property
    def images(self) -> int:
        """Images this call produces (describe counts as one)."""
        return 1 if self.op == "describe" else num_images(self.params)

    @property
    def cost(self) -> Decimal:
        """What the call is billed."""
        return DEFAULT_PRICES.job_cost(self.op, effective_model(self.op, self.params), self.images)

    @property
    def request_hash(self) -> str:
        """sha256 of op, canonical request and source bytes: equal requests hash equal."""
        if not self._hash:
            canonical = json.dumps(self.params, sort_keys=True, separators=(",", ":"))
            source = self.source.sha256 if self.source else ""
            text = f"{self.op}\n{canonical}\n{source}"
            self._hash = hashlib.sha256(text.encode()).hexdigest()
        return self._hash


class SourceFetcher:
    """Fetches ``image_file`` URLs for the proxy, with the app's client session."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: Callable[[], float]) -> None:
        self._session = session
        self._timeout_s = timeout_s  # read per fetch: the config may change at runtime

    async def fetch(self, url: str) -> bytes:
        """The bytes at ``url`` (BadRequest if it cannot be fetched or is over 10 MB)."""
        if not url.startswith(("http://", "https://")):
            raise BadRequest("image_file must be an http(s) URL of a JPEG, PNG or WebP image")
        try:
            timeout = aiohttp.ClientTimeout(total=self._timeout_s())
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise BadRequest(f"image_file could not be fetched: HTTP {response.status}")
                declared = response.content_length
                if declared is not None and declared > MAX_SOURCE_BYTES:
                    raise BadRequest(_too_big())
                return await _read_capped(response.content, MAX_SOURCE_BYTES, _too_big())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BadRequest(f"image_file could not be fetched: {str(exc) or type(exc).__name__}") from exc


FETCHER: web.AppKey[SourceFetcher] = web.AppKey("fake_server_fetcher", SourceFetcher)


def _too_big() -> str:
    return f"image_file is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MB"


async def _read_capped(stream: aiohttp.StreamReader, limit: int, message: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BadRequest(message)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_call(request: web.Request, op: str, *, proxy: bool, fetcher: SourceFetcher | None) -> Call:
    """Parse and validate one call to ``op`` (BadRequest on any problem)."""
    content_type = request.content_type
    if op == "generate":
        _expect(content_type, JSON_TYPE)
        body = await _json_body(request)
        _only_keys(body, {"image_request"}, required={"image_request"})
        return _validated(op, _image_request(body["image_request"]), None)
    if proxy and content_type == JSON_TYPE:
        return await _proxy_json(request, op, fetcher)
    _expect(content_type, MULTIPART_TYPE)
    return await _multipart(request, op)


def _expect(content_type: str, wanted: str) -> None:
    if content_type != wanted:
        shown = content_type or "none"
        expected = "JSON data" if wanted == JSON_TYPE else f"['{wanted}']"
        raise BadRequest(f"Invalid Content-type ({shown}), expected {expected}")


async def _json_body(request: web.Request) -> dict[str, Any]:
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


def _validated(op: str, params: dict[str, Any], source: SourceInfo | None) -> Call:
    problems = check_request(op, params)
    if problems:
        where = "image_request" if op != "describe" else "form"
        raise BadRequest("; ".join(f"{where}.{name}: {message}" for name, message in problems))
    return Call(op, params, source)


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


async def _proxy_json(request: web.Request, op: str, fetcher: SourceFetcher | None) -> Call:
    body = await _json_body(request)
    if op == "describe":
        _only_keys(body, {"image_file", "describe_model_version"}, required={"image_file"})
        params = {k: v for k, v in body.items() if k != "image_file"}
    else:
        _only_keys(body, {"image_request", "image_file"}, required={"image_request", "image_file"})
        params = _image_request(body["image_request"])
    url = body["image_file"]
    if not isinstance(url, str):
        raise BadRequest("image_file must be a URL string")
    # validate before fetching: a bad request costs the server nothing
    call = _validated(op, params, None)
    if fetcher is None:
        raise BadRequest("image_file URLs are not accepted here")
    call.source = _source(await fetcher.fetch(url))
    return call


async def _multipart(request: web.Request, op: str) -> Call:
    if op not in _FORM_FIELDS:
        raise BadRequest(f"Invalid Content-type ({request.content_type}), expected JSON data")
    allowed, required = _FORM_FIELDS[op]
    fields: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise BadRequest("nested multipart bodies are not supported")
            name = part.name or ""
            if name not in allowed:
                raise BadRequest(f"unexpected form field {name!r}")
            if name in fields:
                raise BadRequest(f"form field {name!r} given twice")
            limit = MAX_SOURCE_BYTES if name == "image_file" else MAX_JSON_BYTES
            fields[name] = await _read_part(part, limit, name)
    except (
        ValueError,
        AssertionError,
        LookupError,
        aiohttp.ClientError,
        asyncio.IncompleteReadError,
    ) as exc:
        raise BadRequest(f"malformed multipart body: {str(exc) or type(exc).__name__}") from exc
    missing = sorted(required - fields.keys())
    if missing:
        raise BadRequest(f"'{missing[0]}' is a required property")
    if op == "describe":
        params: dict[str, Any] = {}
        if "describe_model_version" in fields:
            params["describe_model_version"] = _text(fields["describe_model_version"], "form field")
    else:
        params = _image_request(_json_object(fields["image_request"], "image_request"))
    call = _validated(op, params, None)
    call.source = _source(fields["image_file"])
    return call


async def _read_part(part: aiohttp.BodyPartReader, limit: int, name: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BadRequest(_too_big() if name == "image_file" else f"{name} is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 text") from exc
