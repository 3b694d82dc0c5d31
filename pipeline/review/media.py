"""Pictures for the review pages, from the output folders and nowhere else.

``/files/{manifest}/{path}`` serves an image file inside that manifest's
output folder: the path may not hold ``..``, ``.``, empty parts, encoded
slashes or backslashes; its real path (symlinks resolved) must be inside the
folder's real path, and so must the file actually opened (checked again on
its descriptor, so a folder swapped for a symlink in between is caught).
Only image files (.png, .jpg, .jpeg, .webp) are served.

``/thumbs/{image}`` is a JPEG thumbnail of a recorded image, made from its
file under the same rule. ``/sources/{job}`` is a JPEG preview of a job's
source image — a re-encoding of its pixels, never the file: the source is
named by the job in the ledger (never by the URL), and one outside the
output folders is shown only while its bytes still hash to the sha256 the
job was planned with. Source URLs are shown by the browser directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from pipeline import thumbnails
from pipeline.outputs import is_inside
from pipeline.review.state import STATE, ReviewState, path_id

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
#: an image larger than this is not served (nor thumbnailed)
MAX_SERVED_BYTES = 64 * 1024 * 1024
_ENCODED_SEPARATORS = ("%2f", "%5c", "%00")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
CACHE_FOREVER = "private, max-age=86400"


def resolve_inside(root: str, relative: str) -> str | None:
    """The real path of image file ``relative`` under ``root`` (a real path), or None if not allowed."""
    if not relative or "\\" in relative or "\x00" in relative:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    real = os.path.realpath(os.path.join(root, *parts))
    if not is_inside(real, root) or Path(real).suffix.lower() not in IMAGE_TYPES:
        return None
    return real


def read_inside(path: str, roots: list[str]) -> bytes | None:
    """The bytes of image file ``path`` if it is (really) inside one of ``roots``; None otherwise."""
    real = os.path.realpath(path)
    if Path(real).suffix.lower() not in IMAGE_TYPES or not any(is_inside(real, r) for r in roots):
        return None
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SERVED_BYTES:
            return None
        opened = _opened_path(handle.fileno())
        if opened is not None and not any(is_inside(opened, r) for r in roots):
            return None
        return handle.read()


def _opened_path(fd: int) -> str | None:
    """Where the file behind ``fd`` really is (Linux's /proc); None where that cannot be known."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def read_matching(path: str, sha256: str) -> bytes | None:
    """The bytes of image file ``path`` if they hash to ``sha256``; None otherwise."""
    if Path(path).suffix.lower() not in IMAGE_TYPES:
        return None
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SERVED_BYTES:
                return None
            data = handle.read()
    except OSError:
        return None
    return _hashing_to(data, sha256)


def _refuse_encoded(request: web.Request) -> None:
    raw = request.rel_url.raw_path.lower()
    if any(sep in raw for sep in _ENCODED_SEPARATORS):
        raise web.HTTPNotFound()


async def serve_file(request: web.Request) -> web.Response:
    """GET /files/{manifest}/{path}: an image file inside the manifest's output folder."""
    _refuse_encoded(request)
    state = request.app[STATE]
    manifest_id = path_id(request, "manifest")
    root = await state.output_root(manifest_id)
    if root is None:
        raise web.HTTPNotFound()
    real = resolve_inside(root, request.match_info["path"])
    # only the files the ledger recorded: the folder's real path follows a folder swapped for a symlink
    if real is None or not await state.ledger.has_image_at(manifest_id, real):
        raise web.HTTPNotFound()
    data = await asyncio.to_thread(read_inside, real, [root])
    if data is None:
        raise web.HTTPNotFound()
    content_type = IMAGE_TYPES[Path(real).suffix.lower()]
    return web.Response(body=data, content_type=content_type, headers={"Cache-Control": CACHE_FOREVER})


def _size(request: web.Request) -> int:
    size = request.query.get("size", str(thumbnails.THUMB_PX))
    allowed = {str(px): px for px in thumbnails.SIZES}
    if size not in allowed:
        raise web.HTTPNotFound()
    return allowed[size]


async def _thumbnail(
    state: ReviewState, key: str, size: int, read: Callable[[], bytes | None]
) -> web.Response:
    async with state.thumb_gate:
        made = await asyncio.to_thread(thumbnails.cached, state.thumbs_dir, key, size, read)
    if made is None:
        raise web.HTTPNotFound()
    data = await asyncio.to_thread(made.read_bytes)
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": CACHE_FOREVER})


async def serve_thumb(request: web.Request) -> web.Response:
    """GET /thumbs/{image}: the thumbnail of a recorded image whose file is in its output folder."""
    state = request.app[STATE]
    found = await state.ledger.image_file(path_id(request, "image"))
    if found is None:
        raise web.HTTPNotFound()
    manifest_id, path, sha256 = found
    root = await state.output_root(manifest_id)
    if path is None or sha256 is None or root is None:
        raise web.HTTPNotFound()
    return await _thumbnail(state, sha256, _size(request), lambda: read_inside(path, [root]))


async def serve_source(request: web.Request) -> web.Response:
    """GET /sources/{job}: a JPEG preview of a job's local source image."""
    state = request.app[STATE]
    found = await state.ledger.job_source(path_id(request, "job"))
    if found is None:
        raise web.HTTPNotFound()
    _manifest_id, source, sha256 = found
    if source is None or sha256 is None or "://" in source:
        raise web.HTTPNotFound()
    roots = await state.output_roots()
    real = os.path.realpath(source)

    def read() -> bytes | None:
        if any(is_inside(real, r) for r in roots):
            return _hashing_to(read_inside(real, roots), sha256)
        return read_matching(source, sha256)

    return await _thumbnail(state, sha256, _size(request), read)


def _hashing_to(data: bytes | None, sha256: str) -> bytes | None:
    return data if data is not None and hashlib.sha256(data).hexdigest() == sha256 else None
