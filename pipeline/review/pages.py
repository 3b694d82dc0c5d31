"""The review's pages: the live overview, a manifest's gallery, one image in detail, failures."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from pipeline.ledger.gallery import COUNT_CAP, GalleryRow
from pipeline.ledger.review import RATE_WINDOW_S, LedgerOverview, ManifestProgress, WorkerView
from pipeline.outputs import is_inside
from pipeline.results import IMAGE_DOWNLOADED
from pipeline.review.cards import CardView, build_card, filter_controls, parse_filters, usd
from pipeline.review.render import STATIC_FILES, static_text
from pipeline.review.state import STATE, ReviewState, path_id, query_id
from pipeline.thumbnails import PREVIEW_PX

#: cards per gallery page
PAGE_SIZE = 48
JOB_STATES = ("pending", "running", "succeeded", "failed")
WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class ProgressView:
    """A manifest's line on the overview."""

    id: int
    name: str
    done: int
    total: int
    jobs: dict[str, int]
    images: dict[str, int]
    failures: list[tuple[str, int]]
    picks: dict[str, int]
    spent: str
    budget: str | None
    spent_micros: int
    budget_micros: int | None
    jobs_per_min: float
    eta_s: float | None
    in_flight_images: int


def progress_view(progress: ManifestProgress) -> ProgressView:
    """What the overview says of a manifest: progress, spend against budget, rate and ETA."""
    jobs = {state: progress.jobs.get(state, 0) for state in JOB_STATES}
    # jobs taken out of the manifest are shown when there are some, and are not work to do
    withdrawn = progress.jobs.get(WITHDRAWN, 0)
    if withdrawn:
        jobs[WITHDRAWN] = withdrawn
    done = jobs["succeeded"] + jobs["failed"]
    left = jobs["pending"] + jobs["running"]
    rate = progress.finished_recently / RATE_WINDOW_S
    return ProgressView(
        id=progress.id,
        name=progress.name,
        done=done,
        total=sum(progress.jobs.values()) - withdrawn,
        jobs=jobs,
        images=dict(sorted(progress.images.items())),
        failures=sorted(progress.failures.items(), key=lambda item: (-item[1], item[0])),
        picks=progress.picks,
        spent=usd(progress.spent_micros),
        budget=None if progress.budget_micros is None else usd(progress.budget_micros),
        spent_micros=progress.spent_micros,
        budget_micros=progress.budget_micros,
        jobs_per_min=round(rate * 60, 1),
        eta_s=left / rate if rate > 0 and left else (0.0 if not left else None),
        in_flight_images=progress.in_flight_images,
    )


def _live_context(overview: LedgerOverview, state: ReviewState) -> dict[str, Any]:
    names = {p.id: p.name for p in overview.manifests}
    return {
        "at": overview.at,
        "manifests": [progress_view(p) for p in overview.manifests],
        "workers": overview.workers,
        "names": names,
        "allow_actions": state.options.allow_actions,
    }


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8")


async def overview_page(request: web.Request) -> web.Response:
    """GET /: every manifest's progress and the live workers, updated in the page every second."""
    state = request.app[STATE]
    context = _live_context(await state.overview(), state)
    return _html(state.templates.render("overview.html", static=False, **context))


async def overview_fragment(request: web.Request) -> web.Response:
    """GET /live: the overview's changing part, which the page fetches every second."""
    state = request.app[STATE]
    context = _live_context(await state.overview(), state)
    response = _html(state.templates.render("_live.html", **context))
    response.headers["Cache-Control"] = "no-store"
    return response


async def overview_json(request: web.Request) -> web.Response:
    """GET /api/overview: the overview as JSON (for scripts)."""
    state = request.app[STATE]
    overview = await state.overview()
    body = {
        "at": overview.at,
        "manifests": [progress_view(p).__dict__ for p in overview.manifests],
        "workers": [_worker_json(w) for w in overview.workers],
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def _worker_json(worker: WorkerView) -> dict[str, Any]:
    data = dict(worker.__dict__)
    data["in_flight"] = [job.__dict__ for job in worker.in_flight]
    return data


class LiveLinks:
    """Card links to the review server's routes."""

    def __init__(self, manifest_id: int, root: str | None) -> None:
        self.manifest_id = manifest_id
        self.root = root

    def thumb(self, row: GalleryRow) -> str | None:
        """The thumbnail route of a downloaded image."""
        if row.image_state != IMAGE_DOWNLOADED or not row.local_path:
            return None
        return f"/thumbs/{row.image_id}"

    def full(self, row: GalleryRow) -> str | None:
        """The file route of a downloaded image inside the output folder."""
        if row.image_state != IMAGE_DOWNLOADED or not row.local_path or self.root is None:
            return None
        real = os.path.realpath(row.local_path)
        if not is_inside(real, self.root):
            return None
        return f"/files/{self.manifest_id}/{quote(os.path.relpath(real, self.root))}"

    def detail(self, row: GalleryRow) -> str | None:
        """The detail page of the image."""
        return f"/m/{self.manifest_id}/images/{row.image_id}"

    def source_thumb(self, row: GalleryRow, size: int | None = None) -> str | None:
        """A URL source as it is; a local source through the preview route."""
        if row.source is None:
            return None
        if row.source.startswith(("http://", "https://")):
            return row.source
        suffix = f"?size={size}" if size else ""
        return f"/sources/{row.job_id}{suffix}"


async def gallery_page(request: web.Request) -> web.Response:
    """GET /m/{manifest}: a page of cards, filtered by the query, keyset-paginated."""
    state = request.app[STATE]
    manifest_id = path_id(request, "manifest")
    name = await state.manifest_name(manifest_id)
    filters = parse_filters(request.query)
    after = query_id(request, "after")
    before = query_id(request, "before")
    summary = await state.fields.summary(manifest_id)
    page = await state.ledger.gallery_page(
        manifest_id, filters.wanted, after=after, before=before, limit=PAGE_SIZE
    )
    matching = await state.ledger.gallery_count(manifest_id, filters.wanted)
    failed = await state.ledger.failed_count(manifest_id)
    links = LiveLinks(manifest_id, await state.output_root(manifest_id))
    cards = [build_card(row, summary, links) for row in page.rows]
    return _html(
        state.templates.render(
            "gallery.html",
            static=False,
            title=name,
            manifest_id=manifest_id,
            manifest=name,
            filters=filters,
            controls=filter_controls(summary),
            cards=cards,
            matching=f"more than {COUNT_CAP:,}" if matching > COUNT_CAP else str(matching),
            failed=failed,
            next_query=None if page.next_after is None else filters.query(after=page.next_after),
            prev_query=None if page.prev_before is None else filters.query(before=page.prev_before),
            allow_actions=state.options.allow_actions,
        )
    )


async def detail_page(request: web.Request) -> web.Response:
    """GET /m/{manifest}/images/{image}: the image, its source beside it, its job, parent and children."""
    state = request.app[STATE]
    manifest_id = path_id(request, "manifest")
    image_id = path_id(request, "image")
    detail = await state.ledger.image_detail(image_id)
    if detail is None or detail.row.manifest_id != manifest_id:
        raise web.HTTPNotFound(text="no such image in this manifest\n")
    name = await state.manifest_name(manifest_id)
    summary = await state.fields.summary(manifest_id)
    links = LiveLinks(manifest_id, await state.output_root(manifest_id))
    row = detail.row

    def cards(rows: list[GalleryRow]) -> list[CardView]:
        return [build_card(r, summary, links) for r in rows]

    return _html(
        state.templates.render(
            "detail.html",
            static=False,
            title=f"{name} · image {image_id}",
            manifest_id=manifest_id,
            manifest=name,
            card=build_card(row, summary, links),
            row=row,
            request_json=json.dumps(row.request, indent=2, sort_keys=True, ensure_ascii=False),
            source_url=links.source_thumb(row, PREVIEW_PX),
            siblings=cards(detail.siblings),
            parent=cards(detail.parent),
            children=cards(detail.children),
            prev_id=detail.prev_id,
            next_id=detail.next_id,
            allow_actions=state.options.allow_actions,
        )
    )


async def failures_page(request: web.Request) -> web.Response:
    """GET /m/{manifest}/failures: failed jobs grouped by reason, with examples and "retry these"."""
    state = request.app[STATE]
    manifest_id = path_id(request, "manifest")
    name = await state.manifest_name(manifest_id)
    groups = await state.ledger.failure_groups(manifest_id)
    return _html(
        state.templates.render(
            "failures.html",
            static=False,
            title=f"{name} · failures",
            manifest_id=manifest_id,
            manifest=name,
            groups=groups,
            allow_actions=state.options.allow_actions,
        )
    )


async def static_file(request: web.Request) -> web.Response:
    """GET /static/{name}: the page's script or style."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.Response(
        text=static_text(name),
        content_type=STATIC_FILES[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )
