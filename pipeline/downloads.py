"""Downloading produced images: streamed, checked, hashed, renamed into place atomically.

An image is written to a temporary file beside its final name (so the rename
is atomic), its first bytes must be PNG/JPEG/WebP magic, its size is capped,
its sha256 is computed while streaming, and its header must decode. Only then
is it renamed to its final name: no half-written file ever carries one.
Temporary files left by a killed process are removed on the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from pipeline.errors import BadImage, DownloadRetryable, UrlExpired
from pipeline.images import EXTENSIONS, image_size_from_bytes, sniff_image_type
from pipeline.leases import pid_alive
from pipeline.wire import USER_AGENT, retry_after_seconds

#: no produced image is larger than this (Ideogram's upscales are a few MB)
MAX_IMAGE_BYTES = 50 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
#: a body up to this size is held in memory and written in one go (larger ones stream to disk)
SPILL_BYTES = 16 * 1024 * 1024
#: a body up to this size is written by the event loop itself: copying it into the page
#: cache takes tens of microseconds, less than handing it to a thread and back (which also
#: costs context switches and GIL hand-offs); larger bodies are written in a worker thread
INLINE_WRITE_BYTES = 256 * 1024
#: an inline write slower than this (a network file system, an overloaded disk) sends every
#: later write of the run to a worker thread, so the event loop is not held up again
INLINE_WRITE_SLOW_S = 0.02
#: enough of a file to read its dimensions from the header
HEADER_BYTES = 256 * 1024
TEMP_SUFFIX = ".part"
TEMP_PREFIX = ".ideobatch-"
#: another host's temporary file older than this is considered abandoned
STALE_TEMP_S = 3600.0
_HOST = socket.gethostname().replace("-", "_")
log = logging.getLogger("ideobatch")
#: with the host name and pid, names this process's temporary files apart from any other's
#: (containers may share a host name and a pid, and an output volume)
_PROCESS_TOKEN = secrets.token_hex(3)
_TEMP_COUNTER = itertools.count()


@dataclass(frozen=True)
class SavedImage:
    """An image on disk under its final name."""

    path: Path
    sha256: str
    bytes: int
    width: int
    height: int
    kind: str


def temp_name(final: Path) -> Path:
    """A temporary path beside ``final``, naming this host and process (unique within both)."""
    return final.with_name(
        f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{_PROCESS_TOKEN}{next(_TEMP_COUNTER)}-{final.name}{TEMP_SUFFIX}"
    )


def clean_temp_files(root: Path) -> int:
    """Remove temporary files of dead processes under ``root``; returns how many."""
    removed = 0
    if not root.is_dir():
        return 0
    now = time.time()
    for path in root.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        parts = path.name[len(TEMP_PREFIX) :].split("-", 2)
        try:
            host, pid = parts[0], int(parts[1])
        except (IndexError, ValueError):
            continue
        if host == _HOST:
            stale = pid != os.getpid() and not pid_alive(pid)
        else:
            stale = now - path.stat().st_mtime > STALE_TEMP_S
        if stale:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class Downloader:
    """Fetches image URLs to files with the run's session.

    A body is kept in memory up to `SPILL_BYTES` (every produced image, in
    practice) and written in one go — temporary file, write, atomic rename —
    by a worker thread, or by the event loop itself when it is small
    (`INLINE_WRITE_BYTES`) and the disk is fast (`INLINE_WRITE_SLOW_S`); a
    larger body spills to its temporary file as it streams.
    """

    def __init__(self, session: aiohttp.ClientSession, max_bytes: int | None = None) -> None:
        self._session = session
        self.max_bytes = max_bytes if max_bytes is not None else MAX_IMAGE_BYTES
        self.inline_writes = True

    async def fetch(self, url: str, final_without_ext: Path) -> SavedImage:
        """Download ``url`` to ``final_without_ext`` + the extension its bytes call for."""
        temp = temp_name(final_without_ext)
        try:
            body, digest, size, kind = await self._stream(url, temp)
            try:
                width, height = image_size_from_bytes(body[:HEADER_BYTES])
            except ValueError as exc:
                raise BadImage(f"{_safe(url)}: {exc}") from exc
            final = final_without_ext.with_name(f"{final_without_ext.name}.{EXTENSIONS[kind]}")
            whole = body if size == len(body) else None
            if whole is not None and size <= INLINE_WRITE_BYTES and self.inline_writes:
                started = time.monotonic()
                _place(whole, temp, final)
                took = time.monotonic() - started
                if took > INLINE_WRITE_SLOW_S:
                    self.inline_writes = False
                    log.info(
                        "writing an image took %.0f ms: image files are written in a thread now", took * 1e3
                    )
            else:
                await asyncio.to_thread(_place, whole, temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)  # a spilled or half-written temporary file
            raise
        return SavedImage(final, digest, size, width, height, kind)

    async def _stream(self, url: str, temp: Path) -> tuple[bytes, str, int, str]:
        """The body (whole, or its first `SPILL_BYTES` if it spilled to ``temp``), sha256, size, kind."""
        digest = hashlib.sha256()
        size = 0
        kind: str | None = None
        buffer = bytearray()
        spill = None
        try:
            async with self._session.get(url, headers={"User-Agent": USER_AGENT}) as response:
                if response.status in (401, 403, 404, 410):
                    raise UrlExpired(f"{_safe(url)}: HTTP {response.status} (the URL has expired)")
                if response.status in (408, 429) or response.status >= 500:
                    raise DownloadRetryable(
                        f"{_safe(url)}: HTTP {response.status}",
                        retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                    )
                if response.status != 200:
                    raise BadImage(f"{_safe(url)}: HTTP {response.status}")
                declared = response.content_length
                if declared is not None and declared > self.max_bytes:
                    raise BadImage(f"{_safe(url)}: {declared} bytes is over the {self.max_bytes} byte cap")
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    if kind is None:
                        kind = sniff_image_type(chunk[:32])
                        if kind is None:
                            raise BadImage(f"{_safe(url)}: the body is not a PNG, JPEG or WebP image")
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise BadImage(f"{_safe(url)}: over the {self.max_bytes} byte cap")
                    digest.update(chunk)
                    if spill is not None:
                        spill.write(chunk)
                    elif len(buffer) + len(chunk) > SPILL_BYTES:
                        temp.parent.mkdir(parents=True, exist_ok=True)
                        spill = temp.open("wb")
                        spill.write(buffer)
                        spill.write(chunk)
                    else:
                        buffer += chunk
        except (UrlExpired, BadImage, DownloadRetryable):
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DownloadRetryable(f"{_safe(url)}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        finally:
            if spill is not None:
                spill.close()
        if kind is None:
            raise BadImage(f"{_safe(url)}: empty body")
        return bytes(buffer), digest.hexdigest(), size, kind


def _place(body: bytes | None, temp: Path, final: Path) -> None:
    """Write ``body`` to ``temp`` (unless it is there already) and rename it to ``final``."""
    if body is not None:
        try:
            handle = temp.open("wb")
        except FileNotFoundError:  # the first image of its folder (a mkdir per image costs a syscall)
            final.parent.mkdir(parents=True, exist_ok=True)
            handle = temp.open("wb")
        with handle:
            handle.write(body)
    os.replace(temp, final)


def _safe(url: str) -> str:
    """A URL without its query (signatures stay out of messages)."""
    return url.split("?", 1)[0]
