"""Local files streamed into a request as it is sent, checked against the hash they were planned with.

An edit with its references carries up to ~40 MB; eight in flight must not
hold 320 MB. `StreamedFile` is an aiohttp payload that reads its file in
chunks (in a worker thread) while the body is written, hashing what it sends.
A file whose bytes changed since planning must not be paid for: the last
chunk is held back until the hash is known, and a mismatch raises
`SourceChanged` instead of writing it, so the server never receives a whole
body (aiohttp aborts the request; `pipeline.client` turns it into a
``source_changed`` failure).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import Payload
from aiohttp.abc import AbstractStreamWriter

#: bytes read from disk per chunk (a few chunks per file are in memory at once)
CHUNK_BYTES = 256 * 1024


class SourceChanged(Exception):
    """A file's bytes are not the ones it was planned with."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} changed since it was planned; plan the manifest again")
        self.path = path


class StreamedFile(Payload):
    """A local file sent in chunks as the request body is written, its sha256 checked at the end.

    ``size`` is the file's size when the request was prepared (the body's
    Content-Length counts it); ``sha256`` the hash it was planned with (None:
    no check).
    """

    def __init__(
        self, path: Path, *, size: int, sha256: str | None, filename: str, content_type: str
    ) -> None:
        super().__init__(path, filename=filename, content_type=content_type)
        self._path = path
        self._size = self._length = size
        self._sha256 = sha256

    @property
    def path(self) -> Path:
        """The file sent."""
        return self._path

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Not available: the file is only ever streamed."""
        raise TypeError("a streamed file cannot be decoded")

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Stream the whole file."""
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        """Stream the file, holding its last chunk back until its hash is checked."""
        handle: BinaryIO = await asyncio.to_thread(self._path.open, "rb")
        try:
            await self._stream(handle, writer, content_length)
        finally:
            await asyncio.to_thread(handle.close)

    async def _stream(self, handle: BinaryIO, writer: AbstractStreamWriter, limit: int | None) -> None:
        digest = hashlib.sha256()
        sent = 0
        chunk = await asyncio.to_thread(handle.read, CHUNK_BYTES)
        while chunk:
            following = await asyncio.to_thread(handle.read, CHUNK_BYTES)
            digest.update(chunk)
            if sent + len(chunk) > self._length:
                raise SourceChanged(self._path)  # it grew: never send more than was announced
            if not following and not self._intact(digest, sent + len(chunk)):
                raise SourceChanged(self._path)
            piece = chunk if limit is None else chunk[: max(0, limit - sent)]
            if piece:
                await writer.write(piece)
            sent += len(chunk)
            chunk = following
        if sent != self._length:
            raise SourceChanged(self._path)

    def _intact(self, digest: Any, size: int) -> bool:
        return size == self._length and (self._sha256 is None or digest.hexdigest() == self._sha256)
