"""What every handler of the review server shares: the ledger, the options, caches, templates."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pipeline.ledger.repository import Ledger
from pipeline.ledger.review import LedgerOverview
from pipeline.review.fields import FieldCache
from pipeline.review.render import Templates

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: an overview read this recently is shared by every page that polls it
OVERVIEW_TTL_S = 0.5
#: output folders are read again this often (a new manifest, a new --out)
ROOTS_TTL_S = 5.0
#: thumbnails made at once (Pillow holds the GIL only part of the time)
THUMBNAIL_WORKERS = 2


@dataclass(frozen=True)
class ReviewOptions:
    """How `ideobatch serve` was started."""

    ledger_url: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: the page may write to the ledger (picks, retries); otherwise it only reads
    allow_actions: bool = False
    #: every request must carry it (header, cookie, or ``?token=`` once)
    token: str | None = None
    thumbs_dir: str | None = None


def default_thumbs_dir() -> Path:
    """``$XDG_CACHE_HOME/ideobatch/thumbs`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ideobatch" / "thumbs"


class ReviewState:
    """The ledger and the caches of one review server."""

    def __init__(self, ledger: Ledger, options: ReviewOptions) -> None:
        self.ledger = ledger
        self.options = options
        self.fields = FieldCache(ledger)
        self.templates = Templates()
        self.thumbs_dir = Path(options.thumbs_dir) if options.thumbs_dir else default_thumbs_dir()
        self.thumb_gate = asyncio.Semaphore(THUMBNAIL_WORKERS)
        self._roots: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._roots_at = 0.0
        self._overview: tuple[float, LedgerOverview] | None = None
        self._overview_lock = asyncio.Lock()

    async def overview(self) -> LedgerOverview:
        """The ledger's overview, read at most every `OVERVIEW_TTL_S` whoever asks."""
        async with self._overview_lock:
            now = time.monotonic()
            if self._overview is None or now - self._overview[0] > OVERVIEW_TTL_S:
                self._overview = (now, await self.ledger.overview())
            return self._overview[1]

    async def _load_manifests(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._roots_at < ROOTS_TTL_S:
            return
        roots, names = {}, {}
        for record in await self.ledger.list_manifests():
            names[record.id] = record.name
            folder = (record.config.get("output") or {}).get("dir")
            if isinstance(folder, str) and folder:
                roots[record.id] = os.path.realpath(folder)
        self._roots, self._names, self._roots_at = roots, names, time.monotonic()

    async def output_root(self, manifest_id: int) -> str | None:
        """The real path of a manifest's output folder (None: no such manifest)."""
        await self._load_manifests()
        if manifest_id not in self._roots:
            await self._load_manifests(force=True)
        return self._roots.get(manifest_id)

    async def output_roots(self) -> list[str]:
        """The real paths of every manifest's output folder."""
        await self._load_manifests()
        return list(self._roots.values())

    async def manifest_name(self, manifest_id: int) -> str:
        """A manifest's name; 404 when the ledger has no such manifest."""
        await self._load_manifests()
        if manifest_id not in self._names:
            await self._load_manifests(force=True)
        if manifest_id not in self._names:
            raise web.HTTPNotFound(text=f"the ledger has no manifest {manifest_id}")
        return self._names[manifest_id]


STATE: web.AppKey[ReviewState] = web.AppKey("review_state", ReviewState)

#: an id as a URL may carry it: ASCII digits that fit in 63 bits
_ID = re.compile(r"[0-9]{1,18}")


def path_id(request: web.Request, name: str) -> int:
    """The id in the URL's ``{name}`` part; 404 when it is not one."""
    value = request.match_info[name]
    if not _ID.fullmatch(value):
        raise web.HTTPNotFound()
    return int(value)


def query_id(request: web.Request, name: str) -> int | None:
    """The id in the query's ``name`` (None when absent); 400 when it is not one."""
    value = request.query.get(name)
    if value is None:
        return None
    if not _ID.fullmatch(value):
        raise web.HTTPBadRequest(text=f"{name} must be an image id\n")
    return int(value)
