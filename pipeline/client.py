"""The Ideogram client: one aiohttp session, both dialects, both source encodings.

Legacy ops upload their one source image from memory (at most 10 MB, its
hash checked before anything is sent). Ideogram 3.0 ops (flat fields, a
mask, reference sets: ~40 MB a call) stream each local file from disk as the
request is written (`pipeline.uploads`), its hash checked against the planned
one as it goes; URL sources are downloaded first. Either way the files are
checked as the API checks them (`pipeline.file_checks`) before the request
leaves: a file it would refuse fails the job ``bad_source``, unpaid.

This is the only module above the transport that sees aiohttp's exceptions:
`_translate` turns each into the error class that decides what happens next
(most specific first), and records whether the request may have been billed.
Bodies are read to their end under a cap (`pipeline.bodies`). A URL source
the client downloads itself follows redirects only where
`pipeline.redirects` allows, within the download deadline
(``timeouts.download``, as for produced images).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from pipeline import endpoints
from pipeline.api_schema import MAX_SOURCE_BYTES
from pipeline.bodies import BodyError, BodyIncomplete, BodyTooLarge, read_body, read_prefix
from pipeline.durations import human_duration
from pipeline.endpoints import Encoding, Endpoint
from pipeline.errors import ApiError, FatalError, PermanentError, TransientError
from pipeline.file_checks import FileFacts, bytes_facts, file_problems, local_facts
from pipeline.images import CONTENT_TYPES, EXTENSIONS, sniff_image_type
from pipeline.manifest import DEFAULT_DOWNLOAD_TIMEOUT_S, ProviderConfig, TimeoutsConfig
from pipeline.redaction import redact
from pipeline.redirects import RedirectPolicy, RedirectRefused, get_following
from pipeline.results import ApiResult
from pipeline.sources import is_url
from pipeline.storable import storable
from pipeline.uploads import SourceChanged, StreamedFile
from pipeline.wire import (
    SourceBytes,
    auth_headers,
    error_for_status,
    json_body,
    multipart_body,
    parse_result,
    url_of,
)

T = TypeVar("T")
#: the largest successful API body we read (a response is a few KB)
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: how much of an error body is read for its message
MAX_ERROR_BYTES = 64 * 1024


@dataclass(frozen=True)
class Source:
    """A job's source image as planned: a URL, or a local file and its sha256."""

    location: str
    sha256: str | None = None

    @property
    def is_url(self) -> bool:
        """Whether the source is an http(s) URL."""
        return is_url(self.location)


def new_session(timeouts: TimeoutsConfig, connections: int) -> aiohttp.ClientSession:
    """One session for a run: pooled connections, our timeouts, no cookies."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(
        total=None, connect=timeouts.connect, sock_connect=timeouts.connect, sock_read=timeouts.read
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
    )


class IdeogramClient:
    """Calls generate, remix, upscale and describe for one provider and key.

    ``redirects`` limits where a URL source's redirects may lead (default: the
    policy for the provider's base URL); ``source_deadline_s`` bounds the
    download of a URL source.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        provider: ProviderConfig,
        api_key: str,
        *,
        redirects: RedirectPolicy | None = None,
        source_deadline_s: float = DEFAULT_DOWNLOAD_TIMEOUT_S,
    ) -> None:
        self._session = session
        self._provider = provider
        self._headers = auth_headers(provider.kind, api_key)
        self._secret = api_key
        self.redirects = redirects if redirects is not None else RedirectPolicy.for_base_url(provider.url)
        self.source_deadline_s = source_deadline_s

    async def call(
        self,
        op: str,
        request: dict[str, Any],
        files: Sequence[tuple[str, Source]],
        on_send: Callable[[], Awaitable[None]],
    ) -> ApiResult:
        """Make one call and return its parsed result, or raise an `ApiError`.

        ``files`` are the call's files as (part name, source): the main image
        first, then masks and references in order. ``on_send`` runs after the
        files are ready and just before the request leaves, so that the ledger
        records the attempt as sent only then.
        """
        ep = endpoints.endpoint(op)
        url = url_of(self._provider.kind, self._provider.url, ep)
        kwargs = await self._body(ep, request, files)
        await on_send()
        sent = False
        try:
            # never follow a redirect with the key and a paid request: say where it points instead
            async with self._session.post(
                url, headers=self._headers, allow_redirects=False, **kwargs
            ) as response:
                sent = True
                if 300 <= response.status < 400:
                    where = _safe_url(response.headers.get("Location", "?"))
                    raise FatalError(
                        f"HTTP {response.status}: the API redirects {_safe_url(url)} to {where}; "
                        "set provider.base_url to the right address (the key is not sent there)",
                        reason="endpoint",
                        status=response.status,
                    )
                if response.status != 200:
                    text = await self._text(response)
                    retry_after = response.headers.get("Retry-After")
                    raise error_for_status(response.status, text, retry_after, self._secret)
                raw = await read_body(response, MAX_RESPONSE_BYTES)
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise TransientError(
                        "the response is not JSON", reason="bad_response", in_doubt=True
                    ) from exc
                return _redacted(parse_result(ep, body), self._secret)
        except ApiError as exc:
            raise self._scrubbed(exc) from None
        except (TimeoutError, aiohttp.ClientError, OSError, BodyError, SourceChanged) as exc:
            raise self._scrubbed(_translate(exc, sent)) from exc

    def _scrubbed(self, error: ApiError) -> ApiError:
        """The error with a storable message, our key cut out (a server may quote request headers)."""
        message = redact(storable(error.message), self._secret)
        if message != error.message:
            error.message = message
            error.args = (message,)
        return error

    async def _text(self, response: aiohttp.ClientResponse) -> str:
        raw = await read_prefix(response, MAX_ERROR_BYTES)
        return raw.decode("utf-8", "replace")

    async def _body(
        self, ep: Endpoint, request: dict[str, Any], files: Sequence[tuple[str, Source]]
    ) -> dict[str, Any]:
        """JSON (no files, or URLs the server fetches itself) or multipart (the files' bytes).

        `image_encoding` decides (SPEC §6 Wire): ``url`` sends URLs in JSON,
        ``multipart`` sends bytes; ``auto`` sends URLs in JSON only to the
        proxy's legacy endpoints, and bytes everywhere else (URL sources are
        downloaded first).
        """
        if not files:
            return {"json": json_body(ep, request, {})}
        encoding = self._provider.image_encoding
        proxy_takes_urls = self._provider.kind == "crazyrouter" and ep.encoding is Encoding.LEGACY
        if all(source.is_url for _, source in files) and (
            encoding == "url" or (encoding == "auto" and proxy_takes_urls)
        ):
            urls: dict[str, str | list[str]] = {}
            for name, source in files:
                if name != ep.image and ep.role(name).many:
                    listed = urls.setdefault(name, [])
                    assert isinstance(listed, list)
                    listed.append(source.location)
                else:
                    urls[name] = source.location
            return {"json": json_body(ep, request, urls)}
        if ep.encoding is Encoding.FLAT:
            return {"data": await self._streamed_form(ep, request, files)}
        parts = []
        for name, source in files:
            data = await (self._fetch_source(source.location) if source.is_url else _read_source(source))
            parts.append((name, data))
        return {"data": multipart_body(ep, request, parts)}

    async def _streamed_form(
        self, ep: Endpoint, request: dict[str, Any], files: Sequence[tuple[str, Source]]
    ) -> aiohttp.FormData:
        """The multipart form of a flat op: local files streamed from disk, URL sources downloaded."""
        parts: list[tuple[str, SourceBytes | aiohttp.Payload]] = []
        main: FileFacts | None = None
        listed: dict[str, list[FileFacts | None]] = {}
        for name, source in files:
            part: SourceBytes | aiohttp.Payload
            if source.is_url:
                part = await self._fetch_source(source.location)
                facts = bytes_facts(part.data, source.location)
            else:
                part, facts = await asyncio.to_thread(_streamed_source, source)
            if name == ep.image:
                main = facts
            else:
                listed.setdefault(name, []).append(facts)
            parts.append((name, part))
        problems = file_problems(ep, main, listed)
        if problems:
            messages = []
            for problem in problems:
                named = listed.get(problem.role, [])
                item = named[problem.index] if problem.index is not None else None
                if problem.role == ep.image and main is not None:
                    item = main
                where = f"{problem.role} {item.name}" if item is not None else problem.role
                messages.append(f"{where}: {problem.message}")
            raise PermanentError("; ".join(messages), reason="bad_source")
        return multipart_body(ep, request, parts)

    async def _fetch_source(self, url: str) -> SourceBytes:
        """Download a URL source for multipart upload (the native API takes bytes, not URLs)."""
        name = url.split("?", 1)[0].rsplit("/", 1)[-1] or "image"
        deadline = asyncio.timeout(self.source_deadline_s)
        try:
            async with deadline, get_following(self._session, url, self.redirects) as response:
                if response.status != 200:
                    retryable = response.status >= 500 or response.status in (408, 429)
                    message = f"source image {url}: HTTP {response.status}"
                    if retryable:
                        raise TransientError(message, reason="source_unavailable")
                    raise PermanentError(message, reason="bad_source")
                data = await read_body(response, MAX_SOURCE_BYTES)
        except ApiError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, RedirectRefused, BodyError) as exc:
            raise _source_error(url, name, exc, deadline.expired(), self.source_deadline_s) from exc
        return _checked_source(data, name)


async def _read_source(source: Source) -> SourceBytes:
    path = Path(source.location)
    try:
        data = await asyncio.to_thread(_read_capped, path)
    except FileNotFoundError as exc:
        raise PermanentError(f"source image {path}: no such file", reason="bad_source") from exc
    except OSError as exc:
        raise PermanentError(f"source image {path}: {exc.strerror}", reason="bad_source") from exc
    if source.sha256 is not None and hashlib.sha256(data).hexdigest() != source.sha256:
        raise PermanentError(
            f"source image {path} changed since it was planned; plan the manifest again",
            reason="source_changed",
        )
    return _checked_source(data, path.name)


def _streamed_source(source: Source) -> tuple[StreamedFile, FileFacts]:
    """A local file to stream into a request, and its facts (from its first bytes and header)."""
    path = Path(source.location)
    facts = local_facts(path, str(path))
    kind = facts.kind or "png"
    stem = path.name.rsplit(".", 1)[0] or "image"
    upload = StreamedFile(
        path,
        size=facts.size,
        sha256=source.sha256,
        filename=f"{stem}.{EXTENSIONS[kind]}",
        content_type=CONTENT_TYPES[kind],
    )
    return upload, facts


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_SOURCE_BYTES + 1)


def _checked_source(data: bytes, name: str) -> SourceBytes:
    if len(data) > MAX_SOURCE_BYTES:
        raise PermanentError(f"source image {name} is over 10 MB", reason="bad_source")
    kind = sniff_image_type(data[:32])
    if kind is None:
        raise PermanentError(f"source image {name} is not a JPEG, PNG or WebP image", reason="bad_source")
    stem = name.rsplit(".", 1)[0] or "image"
    return SourceBytes(data, f"{stem}.{EXTENSIONS[kind]}", CONTENT_TYPES[kind])


def _source_error(url: str, name: str, exc: BaseException, expired: bool, deadline_s: float) -> ApiError:
    """Why a URL source could not be downloaded, as the error that decides what follows."""
    if isinstance(exc, RedirectRefused):
        return PermanentError(f"source image {url}: {exc}", reason="bad_source")
    if isinstance(exc, BodyTooLarge):
        return PermanentError(f"source image {name} is over 10 MB", reason="bad_source")
    if expired:
        message = f"source image {url}: the download deadline of {human_duration(deadline_s)} passed"
        return TransientError(message, reason="source_unavailable")
    return TransientError(f"source image {url}: {_describe(exc)}", reason="source_unavailable")


def _redacted(result: ApiResult, secret: str) -> ApiResult:
    """A paid answer with the key cut out of its text (a proxy may quote request headers there too)."""
    images = tuple(
        replace(
            image,
            prompt=None if image.prompt is None else redact(image.prompt, secret),
            resolution=None if image.resolution is None else redact(image.resolution, secret),
            style_type=None if image.style_type is None else redact(image.style_type, secret),
        )
        for image in result.images
    )
    descriptions = tuple(redact(text, secret) for text in result.descriptions)
    return replace(result, images=images, descriptions=descriptions)


def _safe_url(url: str) -> str:
    """A URL without its query (signatures stay out of messages)."""
    return url.split("?", 1)[0]


def _describe(exc: BaseException) -> str:
    text = storable(str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _translate(exc: BaseException, sent: bool) -> ApiError:
    """aiohttp's exceptions as ours; ``sent``: the response had started (so it surely arrived)."""
    if (changed := _cause(exc, SourceChanged)) is not None:
        # the request was cut short before its last bytes: the server has nothing to run
        return PermanentError(f"source file {changed}", reason="source_changed")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransientError(f"connect timeout: {_describe(exc)}", reason="connect_timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        # never connected: the request cannot have been billed
        return TransientError(f"cannot connect: {_describe(exc)}", reason="connect_error")
    if isinstance(exc, aiohttp.SocketTimeoutError | asyncio.TimeoutError):
        return TransientError(f"read timeout: {_describe(exc)}", reason="timeout", in_doubt=True)
    if isinstance(exc, aiohttp.ClientPayloadError | BodyIncomplete):
        return TransientError(f"truncated response: {_describe(exc)}", reason="truncated", in_doubt=True)
    if isinstance(exc, BodyTooLarge):
        return TransientError(f"the response is too large: {exc}", reason="bad_response", in_doubt=True)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionError):
        return TransientError(f"connection lost: {_describe(exc)}", reason="connection_reset", in_doubt=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return TransientError(f"bad response: {_describe(exc)}", reason="bad_response", in_doubt=True)
    del sent
    return TransientError(f"network error: {_describe(exc)}", reason="network", in_doubt=True)


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the exception of type ``kind`` it was raised from (aiohttp wraps a body's errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@asynccontextmanager
async def opened_session(timeouts: TimeoutsConfig, connections: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A session closed on exit."""
    session = new_session(timeouts, connections)
    try:
        yield session
    finally:
        await session.close()
