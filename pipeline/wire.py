"""The two API dialects on the wire: request bodies, response parsing, error bodies (SPEC §6, §10).

`crazyrouter` (the proxy) takes ``Authorization: Bearer``; `ideogram`
(native) takes ``Api-Key``. Each op's paths and body encoding come from the
endpoint catalog (`pipeline.endpoints`): the legacy encoding wraps the fields
in ``image_request`` (JSON, or a JSON part of a multipart form beside the
``image_file`` part; the proxy also takes ``"image_file": "<url>"`` in JSON),
except for ops whose fields are not wrapped (describe), which send them flat.
The flat encoding (Ideogram 3.0 and 4.0) sends every field as its own part —
a list as repeated parts, an object (a palette, a JSON prompt) as a JSON
part — beside the files, each under its role's name; or JSON, with URL-valued
file fields, when it sends no file bytes. Fields go under the API's own names
(`Endpoint.wire_names`: V4's ``text_prompt`` for a manifest's ``prompt``). A
describe whose answer is one object (V4's ``json_prompt``) is recorded as
that object's JSON text.
Responses are parsed leniently where the API varies and strictly where it
matters.
"""

from __future__ import annotations

import email.utils
import io
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from pipeline.endpoints import Encoding, Endpoint
from pipeline.errors import ApiError, FatalError, PermanentError, TransientError
from pipeline.redaction import redact
from pipeline.results import ApiResult, GeneratedImage
from pipeline.storable import storable

USER_AGENT = "ideobatch/0.1 (+https://github.com/ideobatch)"
#: how much of an error body is kept as the recorded message
MAX_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class SourceBytes:
    """A source image to upload: its bytes and what they are."""

    data: bytes
    filename: str
    content_type: str


def url_of(kind: str, base_url: str, ep: Endpoint) -> str:
    """The URL of an endpoint at a provider."""
    return f"{base_url}{ep.proxy_path if kind == 'crazyrouter' else ep.native_path}"


def auth_headers(kind: str, api_key: str) -> dict[str, str]:
    """The authentication header of a provider (and our user agent)."""
    if kind == "crazyrouter":
        return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
    return {"Api-Key": api_key, "User-Agent": USER_AGENT}


def json_body(ep: Endpoint, request: dict[str, Any], files: dict[str, str | list[str]]) -> dict[str, Any]:
    """The JSON body of a call; ``files`` are URLs by part name (the proxy fetches them)."""
    if ep.encoding is Encoding.LEGACY and ep.wrapped:
        body: dict[str, Any] = {"image_request": request}
    else:
        body = ep.to_wire(request)
    body.update(files)
    return body


def multipart_body(
    ep: Endpoint, request: dict[str, Any], files: Sequence[tuple[str, SourceBytes | aiohttp.Payload]]
) -> aiohttp.FormData:
    """The multipart form of a call with files; ``files`` are (part name, file) in order.

    A file is its bytes, or a payload that streams it from disk
    (`pipeline.uploads.StreamedFile`).
    """
    form = aiohttp.FormData()
    if ep.encoding is Encoding.LEGACY and ep.wrapped:
        form.add_field("image_request", json.dumps(request), content_type="application/json")
    else:
        for name, value in ep.to_wire(request).items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    form.add_field(name, json.dumps(item), content_type="application/json")
                elif isinstance(item, bool):
                    form.add_field(name, "true" if item else "false")
                else:
                    form.add_field(name, str(item))
    for name, source in files:
        if isinstance(source, aiohttp.Payload):
            form.add_field(name, source, filename=source.filename)
            continue
        # a file object (not bytes): aiohttp streams it without copying or warning on large uploads
        form.add_field(
            name, io.BytesIO(source.data), filename=source.filename, content_type=source.content_type
        )
    return form


# --- responses -------------------------------------------------------------------------


def parse_created(value: Any) -> float | None:
    """`created` as unix seconds: the native API sends ISO text, the proxy an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _field_text(value: Any, field: str, sanitized: list[str]) -> str | None:
    """A text field of a response made storable (None if it is not text); notes a change."""
    if not isinstance(value, str):
        return None
    cleaned = storable(value)
    if cleaned != value and field not in sanitized:
        sanitized.append(field)
    return cleaned


def _storable_json(value: Any, field: str, sanitized: list[str]) -> Any:
    """A JSON value with every text in it (keys too) made storable; notes ``field`` if one changed."""
    if isinstance(value, str):
        return _field_text(value, field, sanitized)
    if isinstance(value, dict):
        return {
            _field_text(str(k), field, sanitized) or "": _storable_json(v, field, sanitized)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_storable_json(item, field, sanitized) for item in value]
    return value


def _storable_int(value: Any) -> bool:
    """Whether ``value`` is an integer a ledger's BIGINT holds (Ideogram's seeds are < 2**31)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _short(text: str | None, limit: int = 32) -> str | None:
    """A text cut to what its ledger column holds (VARCHAR(32) for resolution and style_type)."""
    return text if text is None else text[:limit]


def parse_result(ep: Endpoint, body: Any) -> ApiResult:
    """A successful body as an `ApiResult`; a body the API would not send is retryable.

    The call is paid for by now, so text the ledger cannot store (a NUL, a
    lone surrogate) is cleaned rather than refused, and the fields it was
    found in are named in ``ApiResult.sanitized``.
    """
    if not isinstance(body, dict):
        raise TransientError("the response is not a JSON object", reason="bad_response", in_doubt=True)
    created = parse_created(body.get("created"))
    sanitized: list[str] = []
    if ep.answer is not None:
        answer = body.get(ep.answer.name)
        if not isinstance(answer, dict):
            message = f"the response has no `{ep.answer.name}` object"
            raise TransientError(message, reason="bad_response", in_doubt=True)
        recorded = json.dumps(_storable_json(answer, ep.answer.name, sanitized), ensure_ascii=False)
        return ApiResult(descriptions=(recorded,), created=created, sanitized=tuple(sanitized))
    if not ep.makes_images:
        items = body.get("descriptions")
        if not isinstance(items, list) or not items:
            raise TransientError("the response has no `descriptions`", reason="bad_response", in_doubt=True)
        texts = []
        for item in items:
            text = _field_text(item.get("text") if isinstance(item, dict) else None, "text", sanitized)
            if text is None:
                raise TransientError("a description has no `text`", reason="bad_response", in_doubt=True)
            texts.append(text)
        return ApiResult(descriptions=tuple(texts), created=created, sanitized=tuple(sanitized))
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise TransientError("the response has no `data`", reason="bad_response", in_doubt=True)
    images = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise TransientError("an image entry is not an object", reason="bad_response", in_doubt=True)
        url = item.get("url")
        safe = item.get("is_image_safe", True)
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise TransientError("an image URL is not an http(s) URL", reason="bad_response", in_doubt=True)
        if url is None and safe is not False:
            raise TransientError("an image has no URL", reason="bad_response", in_doubt=True)
        seed = item.get("seed")
        images.append(
            GeneratedImage(
                index=index,
                url=_field_text(url, "url", sanitized) or None,
                prompt=_field_text(item.get("prompt"), "prompt", sanitized),
                resolution=_short(_field_text(item.get("resolution"), "resolution", sanitized)),
                seed=seed if _storable_int(seed) else None,
                is_image_safe=safe is not False,
                style_type=_short(_field_text(item.get("style_type"), "style_type", sanitized)),
            )
        )
    return ApiResult(images=tuple(images), created=created, sanitized=tuple(sanitized))


# --- errors ---------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _strip_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()


def error_details(text: str, secret: str = "") -> tuple[str, str | None]:
    """The message and the machine reason (``reject_reason`` / ``code``) of an error body.

    The message is made storable and has ``secret`` (the API key, which a
    server may quote back) redacted from it before it is cut to
    `MAX_MESSAGE_CHARS`: a cut first could leave the key's beginning behind.
    """
    message, code = _message_and_code(text)
    return redact(storable(message), secret)[:MAX_MESSAGE_CHARS], code


def _message_and_code(text: str) -> tuple[str, str | None]:
    try:
        body = json.loads(text)
    except ValueError:
        return (_strip_html(text) or "(empty body)"), None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # proxy: {"error": {"message", "type", "code"}}
            code = error.get("code") or error.get("type")
            return str(error.get("message") or code or "error"), (str(code) if code else None)
        reason = body.get("reject_reason")
        for key in ("error", "detail", "message", "title"):
            if isinstance(body.get(key), str):
                return body[key], str(reason) if reason else None
    return text, None


_FUNDS = {"insufficient_funds", "insufficient_quota", "daily_limit"}
_RATE = {"inflight_limit", "rate_limit_exceeded"}


def error_for_status(status: int, text: str, retry_after: str | None, secret: str = "") -> ApiError:
    """The error class an HTTP status calls for (SPEC §6 Retry); ``secret`` is redacted from it."""
    message, code = error_details(text, secret)
    shown = f"HTTP {status}: {message}"
    if status == 422:
        return PermanentError(shown, reason="unsafe", status=status)
    if status == 402 or (status == 403 and code in _FUNDS):
        return FatalError(shown, reason="insufficient_funds", status=status)
    if status in (401, 403):
        return FatalError(shown, reason="auth", status=status)
    if status in (404, 405):
        return FatalError(f"{shown} (is base_url right?)", reason="endpoint", status=status)
    if status == 429:
        return TransientError(
            shown,
            reason="rate_limited",
            status=status,
            retry_after=retry_after_seconds(retry_after),
            inflight_limit=code in _RATE or code is None,
        )
    if status == 408:
        return TransientError(
            shown, reason="http_408", status=status, retry_after=retry_after_seconds(retry_after)
        )
    if status >= 500:
        return TransientError(
            shown,
            reason=f"http_{status}",
            status=status,
            in_doubt=True,
            retry_after=retry_after_seconds(retry_after),
        )
    return PermanentError(shown, reason="invalid_request", status=status)
