"""Reading an HTTP body to its end, under a cap.

aiohttp's `StreamReader.read(n)` returns what has arrived so far (at most
``n`` bytes), not ``n`` bytes: a body that comes in several TCP segments
needs a loop until EOF. Every body ideobatch reads — API answers, error
pages, source images, produced images — is read here: to EOF, refusing a
declared ``Content-Length`` over the cap before reading a byte, stopping as
soon as the cap is passed, and treating a body shorter than its
``Content-Length`` as cut short. Callers translate `BodyTooLarge` and
`BodyIncomplete` as they translate aiohttp's own exceptions
(`pipeline.client`, `pipeline.downloads`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp

#: bytes asked for per read (also bounds what one read may decompress)
CHUNK_BYTES = 64 * 1024


class BodyError(Exception):
    """A body that cannot be used whole."""


class BodyTooLarge(BodyError):
    """The body is (or says it is) larger than the cap."""

    def __init__(self, cap: int, size: int, *, declared: bool) -> None:
        said = "declares" if declared else "has more than"
        super().__init__(f"the body {said} {size} bytes; the cap is {cap}")
        self.cap = cap
        self.size = size
        self.declared = declared


class BodyIncomplete(BodyError):
    """The body ended before the length its ``Content-Length`` declared."""

    def __init__(self, received: int, declared: int) -> None:
        super().__init__(f"the body ended after {received} of its {declared} bytes")
        self.received = received
        self.declared = declared


async def iter_body(
    response: aiohttp.ClientResponse, cap: int, chunk_bytes: int = CHUNK_BYTES
) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive, to its end; `BodyTooLarge` past ``cap`` bytes.

    A declared length over ``cap`` is refused before anything is read; a body
    shorter than its declared length raises `BodyIncomplete` at its end
    (aiohttp's own `ClientPayloadError` usually comes first).
    """
    declared = response.content_length
    if declared is not None and declared > cap:
        raise BodyTooLarge(cap, declared, declared=True)
    size = 0
    while chunk := await response.content.read(chunk_bytes):
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(cap, size, declared=False)
        yield chunk
    # a compressed body's Content-Length counts the bytes on the wire, not the ones read
    if declared is not None and size < declared and _identity(response):
        raise BodyIncomplete(size, declared)


async def read_body(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body (at most ``cap`` bytes), read to its end; see `iter_body`."""
    return b"".join([chunk async for chunk in iter_body(response, cap)])


async def read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body's first ``limit`` bytes (all of it when shorter), for error messages.

    An error page cut short still gives what arrived: its status, not its
    text, decides what happens next.
    """
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit and (chunk := await response.content.read(min(CHUNK_BYTES, limit - size))):
            parts.append(chunk)
            size += len(chunk)
    except aiohttp.ClientPayloadError:
        pass
    return b"".join(parts)


def _identity(response: aiohttp.ClientResponse) -> bool:
    return response.headers.get("Content-Encoding", "identity").strip().lower() in ("", "identity")
