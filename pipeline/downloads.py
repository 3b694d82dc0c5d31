"""Downloading produced images: streamed, checked, hashed, renamed into place atomically.

An image is written to a temporary file beside its final name (so the rename
is atomic), its first bytes must be PNG/JPEG/WebP magic, its size is capped,
its sha256 is computed while streaming, and its header must decode. Only then
is it renamed to its final name: no half-written file ever carries one.
Temporary files left by a killed process are removed on the next start.

A download has an overall deadline (``timeouts.download``, 120 s by default:
a server sending a byte a second must not hold a job for minutes) and follows
redirects only where `pipeline.redirects` allows. Network trouble is
`DownloadRetryable`; the output folder's own errors are `OutputUnusable`
(`pipeline.outputs`), never retried as if the network had failed.
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
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from pipeline.bodies import BodyIncomplete, BodyTooLarge, iter_body
from pipeline.durations import human_duration
from pipeline.errors import BadImage, DownloadRetryable, UrlExpired
from pipeline.images import EXTENSIONS, image_size_from_bytes, png_has_rgba, sniff_image_type
from pipeline.leases import pid_alive
from pipeline.manifest import DEFAULT_DOWNLOAD_TIMEOUT_S
from pipeline.outputs import SpillFile, place
from pipeline.redirects import RedirectPolicy, RedirectRefused, get_following
from pipeline.wire import USER_AGENT, retry_after_seconds

#: no produced image is larger than this (Ideogram's upscales are a few MB)
MAX_IMAGE_BYTES = 50 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
#: the image type is judged on this many first bytes (or the whole body, when shorter)
SNIFF_BYTES = 32
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
#: the longest file name most file systems take, in bytes
MAX_NAME_BYTES = 255
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
    """A temporary path beside ``final``, naming this host and process (unique within both).

    The final name is cut so that the temporary name is no longer than
    `MAX_NAME_BYTES`: a name the file system takes must not fail as a
    temporary one.
    """
    head = f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{_PROCESS_TOKEN}{next(_TEMP_COUNTER)}-"
    room = max(0, MAX_NAME_BYTES - len(head.encode()) - len(TEMP_SUFFIX))
    tail = final.name.encode()[:room].decode("utf-8", "ignore")
    return final.with_name(f"{head}{tail}{TEMP_SUFFIX}")


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
    """Fetches image URLs to files under the output root with the run's session.

    A body is kept in memory up to `SPILL_BYTES` (every produced image, in
    practice) and written in one go — temporary file, write, atomic rename —
    by a worker thread, or by the event loop itself when it is small
    (`INLINE_WRITE_BYTES`) and the disk is fast (`INLINE_WRITE_SLOW_S`); a
    larger body spills to its temporary file as it streams. Each write checks
    that its folder is still inside ``root`` (`pipeline.outputs`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        root: Path,
        *,
        redirects: RedirectPolicy | None = None,
        deadline_s: float = DEFAULT_DOWNLOAD_TIMEOUT_S,
        max_bytes: int | None = None,
    ) -> None:
        self._session = session
        self.root = os.path.realpath(root)
        self.redirects = redirects if redirects is not None else RedirectPolicy()
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes if max_bytes is not None else MAX_IMAGE_BYTES
        self.inline_writes = True

    async def fetch(self, url: str, final_without_ext: Path, *, rgba: bool = False) -> SavedImage:
        """Download ``url`` to ``final_without_ext`` + the extension its bytes call for.

        ``rgba``: the image must be a PNG with an alpha channel (a transparent
        background was asked for); anything else is a `BadImage`.
        """
        temp = temp_name(final_without_ext)
        spill = SpillFile(temp, self.root)
        try:
            body, digest, size, kind = await self._stream(url, spill)
            if rgba and not png_has_rgba(body[:HEADER_BYTES]):
                raise BadImage(
                    f"{_safe(url)}: not an RGBA PNG, though a transparent background was asked for"
                )
            try:
                width, height = image_size_from_bytes(body[:HEADER_BYTES])
            except ValueError as exc:
                raise BadImage(f"{_safe(url)}: {exc}") from exc
            final = final_without_ext.with_name(f"{final_without_ext.name}.{EXTENSIONS[kind]}")
            if spill.started:
                await asyncio.to_thread(spill.finish, final.name)
            elif size <= INLINE_WRITE_BYTES and self.inline_writes:
                started = time.monotonic()
                _place(body, temp, final, self.root)
                took = time.monotonic() - started
                if took > INLINE_WRITE_SLOW_S:
                    self.inline_writes = False
                    log.info(
                        "writing an image took %.0f ms: image files are written in a thread now", took * 1e3
                    )
            else:
                await asyncio.to_thread(_place, body, temp, final, self.root)
        finally:
            spill.discard()  # a spilled temporary file that was not renamed into place
        return SavedImage(final, digest, size, width, height, kind)

    async def _stream(self, url: str, spill: SpillFile) -> tuple[bytes, str, int, str]:
        """The body (whole, or its first bytes if it spilled to its temporary file), sha256, size, kind."""
        digest = hashlib.sha256()
        size = 0
        kind: str | None = None
        buffer = bytearray()
        headers = {"User-Agent": USER_AGENT}
        try:
            async with (
                asyncio.timeout(self.deadline_s) as deadline,
                get_following(self._session, url, self.redirects, headers) as response,
            ):
                _check_status(url, response)
                async with aclosing(iter_body(response, self.max_bytes, CHUNK_BYTES)) as chunks:
                    async for chunk in chunks:
                        size += len(chunk)
                        digest.update(chunk)
                        if not spill.started and len(buffer) + len(chunk) > SPILL_BYTES:
                            spill.write(bytes(buffer))
                        if spill.started:
                            spill.write(chunk)
                            if len(buffer) < HEADER_BYTES:  # what the type and size are read from
                                buffer += chunk[: HEADER_BYTES - len(buffer)]
                        else:
                            buffer += chunk
                        if kind is None and (len(buffer) >= SNIFF_BYTES or spill.started):
                            kind = _sniffed(url, buffer)
        except RedirectRefused as exc:
            raise BadImage(f"{_safe(url)}: {exc}") from exc
        except BodyTooLarge as exc:
            what = f"{exc.size} bytes is" if exc.declared else "the body is"
            raise BadImage(f"{_safe(url)}: {what} over the {self.max_bytes} byte cap") from exc
        except TimeoutError as exc:
            if deadline.expired():
                raise DownloadRetryable(
                    f"{_safe(url)}: the download deadline of {human_duration(self.deadline_s)} passed "
                    f"after {size} bytes"
                ) from exc
            raise DownloadRetryable(f"{_safe(url)}: read timeout") from exc
        except (aiohttp.ClientError, BodyIncomplete, OSError) as exc:
            raise DownloadRetryable(f"{_safe(url)}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        if size == 0:
            raise BadImage(f"{_safe(url)}: empty body")
        if kind is None:  # a body shorter than SNIFF_BYTES
            kind = _sniffed(url, buffer)
        return bytes(buffer), digest.hexdigest(), size, kind


def _check_status(url: str, response: aiohttp.ClientResponse) -> None:
    """Raise the download error that an unsuccessful status calls for."""
    if response.status in (401, 403, 404, 410):
        raise UrlExpired(f"{_safe(url)}: HTTP {response.status} (the URL has expired)")
    if response.status in (408, 429) or response.status >= 500:
        raise DownloadRetryable(
            f"{_safe(url)}: HTTP {response.status}",
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    if response.status != 200:
        raise BadImage(f"{_safe(url)}: HTTP {response.status}")


def _sniffed(url: str, head: bytes | bytearray) -> str:
    kind = sniff_image_type(bytes(head[:SNIFF_BYTES]))
    if kind is None:
        raise BadImage(f"{_safe(url)}: the body is not a PNG, JPEG or WebP image")
    return kind


def _place(body: bytes, temp: Path, final: Path, root: str) -> None:
    """Write ``body`` to ``temp`` and rename it to ``final``, inside the output ``root``."""
    place(body, temp, final, root)


def _safe(url: str) -> str:
    """A URL without its query (signatures stay out of messages)."""
    return url.split("?", 1)[0]
