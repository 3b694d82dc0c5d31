"""Reading an Ideogram 3.0 or 4.0 call off the wire: flat fields, repeated parts, several files.

The native API takes ``multipart/form-data`` with one part per field (a list
as repeated parts, ``color_palette`` as a JSON part), the main image as
``image`` and each other file under its role's name (repeated for a list);
the ops that take no image also take JSON. The proxy takes the same
multipart, and JSON with URL-valued file fields (``"image": "<url>"``,
``"style_reference_images": ["<url>", ...]``), which it fetches.

Fields come under the API's names (V4's ``text_prompt``) and are read under
a manifest's (`Endpoint.from_wire`). Text parts are typed by the op's schema
(an integer field's part is parsed as an integer, an object's — a palette, a
JSON prompt — as JSON); then the call is checked as the catalog
says (`Endpoint.check` with the files' counts) and its files as the API
checks them (`pipeline.file_checks`: type, size, sets, masks, square
sources). Files are read in chunks and only their hash, size and first
bytes are kept, so a server receiving many 40 MB calls stays small.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from pipeline.api_schema import MAX_SOURCE_BYTES
from pipeline.endpoints import Endpoint
from pipeline.fake_server.images import SourceInfo, UndecodableImage, inspect_source
from pipeline.fake_server.requests import (
    JSON_TYPE,
    MALFORMED_MULTIPART,
    MAX_JSON_BYTES,
    MULTIPART_TYPE,
    BadRequest,
    Call,
    SourceFetcher,
    expect_type,
    read_json_body,
    text_of,
)
from pipeline.file_checks import FileFacts, bytes_facts, file_problems, header_facts

#: the first bytes of each received file that are kept (enough for its type and size)
HEAD_BYTES = 256 * 1024
_CHUNK = 64 * 1024


@dataclass
class _Received:
    """One file as received: its hash and what the checks need to know."""

    sha256: str
    facts: FileFacts
    #: the whole file when it is small (else its first `HEAD_BYTES`)
    head: bytes


@dataclass
class _Body:
    """A call's fields (as text or JSON values), files and part names, before validation."""

    #: multipart text parts (or JSON parts, decoded), by name, in order
    values: dict[str, list[Any]] = field(default_factory=dict)
    #: a JSON body's fields, as they are
    fields: dict[str, Any] = field(default_factory=dict)
    files: dict[str, list[_Received]] = field(default_factory=dict)
    urls: dict[str, list[str]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


async def read_flat_call(
    request: web.Request, ep: Endpoint, *, proxy: bool, fetcher: SourceFetcher | None
) -> Call:
    """Parse and validate one call to a flat (Ideogram 3.0, 4.0) endpoint; BadRequest on any problem."""
    content_type = request.content_type
    json_allowed = proxy or ep.image is None
    if content_type == JSON_TYPE and json_allowed:
        body = await _json(request, ep, urls_allowed=proxy)
        encoding = "json"
    else:
        expect_type(content_type, MULTIPART_TYPE)
        body = await _multipart(request, ep)
        encoding = "multipart"
    if encoding == "json":
        params = ep.from_wire(body.fields)
    else:
        params = _typed(ep.request, ep.from_wire(body.values))
    counts = {name: len(body.files.get(name, ())) + len(body.urls.get(name, ())) for name in ep.file_names}
    has_image = ep.image is not None and (ep.image in body.files or ep.image in body.urls)
    # fields first: a bad request costs the server no fetch
    checked = ep.check(params, files=counts)
    problems = [(_wire_path(ep, name), message) for name, message in checked if message]
    if ep.image is not None and not has_image:
        problems.append((ep.image, f"'{ep.image}' is a required property"))
    _raise(problems)
    for name, urls in body.urls.items():
        if fetcher is None:
            raise BadRequest(f"{name} URLs are not accepted here")
        for url in urls:
            data = await fetcher.fetch(url, name)
            digest = hashlib.sha256(data).hexdigest()
            received = _Received(digest, bytes_facts(data, name), data[:HEAD_BYTES])
            body.files.setdefault(name, []).append(received)
    main = body.files[ep.image][0] if ep.image is not None else None
    roles = {name: [f.facts for f in found] for name, found in body.files.items() if name != ep.image}
    bad = file_problems(ep, main.facts if main else None, roles)
    _raise([(p.role if p.index is None else f"{p.role}[{p.index}]", p.message) for p in bad])
    call = Call(ep, params, _source(main) if main else None)
    call.encoding, call.parts = encoding, tuple(body.names)
    call.files = {name: tuple(f.sha256 for f in found) for name, found in body.files.items()}
    return call


def _wire_path(ep: Endpoint, path: str) -> str:
    """A problem's field path with its field named as the API names it (``text_prompt``)."""
    top, dot, rest = path.partition(".")
    return ep.wire_names.get(top, top) + dot + rest


def _raise(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise BadRequest("; ".join(f"form.{name}: {message}" for name, message in problems))


def _source(received: _Received) -> SourceInfo:
    """The main image as the server describes it (its colour only when it arrived whole and small)."""
    facts = received.facts
    if facts.size <= len(received.head):
        try:
            return inspect_source(received.head)
        except UndecodableImage as exc:
            raise BadRequest(str(exc)) from exc
    return SourceInfo(facts.width or 0, facts.height or 0, "grey", received.sha256)


# --- JSON -----------------------------------------------------------------------------------


async def _json(request: web.Request, ep: Endpoint, *, urls_allowed: bool) -> _Body:
    raw = await read_json_body(request)
    body = _Body(names=list(raw))
    file_parts = ep.file_names | ({ep.image} if ep.image else set())
    for name, value in raw.items():
        if name in ep.wire_names:  # a manifest's name of a field the API reads under another
            raise BadRequest(f"Additional properties are not allowed ('{name}' was unexpected)")
        if name not in file_parts:
            body.fields[name] = value
            continue
        if not urls_allowed:
            raise BadRequest(f"{name} is a file: send multipart/form-data")
        many = name != ep.image and ep.role(name).many
        items = value if many and isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items) or (many and not isinstance(value, list)):
            raise BadRequest(f"{name} must be {'a list of URLs' if many else 'a URL'}")
        body.urls[name] = list(items)
    return body


# --- multipart ------------------------------------------------------------------------------


async def _multipart(request: web.Request, ep: Endpoint) -> _Body:
    body = _Body()
    file_parts = ep.file_names | ({ep.image} if ep.image else set())
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise BadRequest("nested multipart bodies are not supported")
            name = part.name or ""
            body.names.append(name)
            if name in file_parts:
                if name == ep.image and name in body.files:
                    raise BadRequest(f"form field {name!r} given twice")
                body.files.setdefault(name, []).append(await _read_file(part, name))
            elif name in ep.wire_fields:
                raw = await _read_text(part, name)
                text = text_of(raw, "form field")
                is_json = (part.headers.get("Content-Type") or "").startswith(JSON_TYPE)
                body.values.setdefault(name, []).append(_json_value(text, name) if is_json else text)
            else:
                raise BadRequest(f"unexpected form field {name!r}")
    except MALFORMED_MULTIPART as exc:
        raise BadRequest(f"malformed multipart body: {str(exc) or type(exc).__name__}") from exc
    return body


def _json_value(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"{name} is not valid JSON: {exc}") from exc


async def _read_text(part: aiohttp.BodyPartReader, name: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise BadRequest(f"{name} is too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_file(part: aiohttp.BodyPartReader, name: str) -> _Received:
    """A file part read in chunks: hashed, sized, its first bytes kept."""
    digest = hashlib.sha256()
    head = bytearray()
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > MAX_SOURCE_BYTES:
            raise BadRequest(f"{name} is larger than {MAX_SOURCE_BYTES // (1024 * 1024)} MB")
        digest.update(chunk)
        if len(head) < HEAD_BYTES:
            head += chunk[: HEAD_BYTES - len(head)]
    if size == 0:
        raise BadRequest(f"{name} is empty")
    data = bytes(head)
    facts = bytes_facts(data, name) if size <= len(data) else header_facts(data, size, name)
    return _Received(digest.hexdigest(), facts, data)


# --- typing text parts by the schema ---------------------------------------------------------


@cache
def _kinds(model: type[BaseModel]) -> dict[str, str]:
    """Each field's JSON type (``integer``, ``array``, ``object``, ...), from the model's schema."""
    schema = model.model_json_schema()
    kinds = {}
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        kinds[name] = next((_kind(o) for o in options if _kind(o) != "null"), "string")
    return kinds


def _kind(prop: Mapping[str, Any]) -> str:
    if "$ref" in prop:
        return "object"
    return str(prop.get("type", "string"))


def _typed(model: type[BaseModel], values: Mapping[str, list[Any]]) -> dict[str, Any]:
    """Form values as the schema types them (JSON values are taken as they are)."""
    kinds = _kinds(model)
    params: dict[str, Any] = {}
    for name, items in values.items():
        kind = kinds.get(name, "string")
        if kind == "array":
            params[name] = list(items)  # repeated parts
            continue
        if len(items) > 1:
            raise BadRequest(f"form field {name!r} given twice")
        params[name] = _scalar(items[0], kind)
    return params


def _scalar(value: Any, kind: str) -> Any:
    if not isinstance(value, str):
        return value
    if kind == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind == "object":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
