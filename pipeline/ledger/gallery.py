"""Read-side verbs of the review gallery: pages of images with their jobs, one image in detail.

Pages are keyset-paginated on the image id (``WHERE images.id > :after
ORDER BY images.id LIMIT n``), so page 2,000 of a 100,000-image manifest
costs what page 1 does. Filters may name any request field: the request is
JSON text, read with the backend's own JSON functions (SQLite's
``json_extract``, PostgreSQL's ``jsonb`` operators).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, String, bindparam, cast, func, select, type_coerce

from pipeline.endpoints import CATALOG
from pipeline.ledger.base import LedgerBase
from pipeline.ledger.faults import verb
from pipeline.ledger.tables import images, jobs, picks
from pipeline.structured import summary_of

#: request field names a filter may use (they become part of a JSON path)
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: the pick filter's value for images nobody has judged yet
UNREVIEWED = "none"
#: gallery counts stop past this many images
COUNT_CAP = 1000


@dataclass(frozen=True)
class GalleryFilter:
    """Which images of a manifest a gallery page shows (every condition must hold)."""

    op: str | None = None
    image_state: str | None = None
    #: ``picked``, ``rejected`` or `UNREVIEWED`
    pick: str | None = None
    #: a prefix of the job key
    job: str | None = None
    #: text within the prompt as written / as the API returned it (case-insensitive)
    prompt: str | None = None
    enhanced: str | None = None
    source_id: str | None = None
    seed: int | None = None
    #: the price of one image, in micro-dollars
    cost_micros: int | None = None
    #: request fields and the value each must have (None: the job's request lacks the field)
    fields: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class GalleryRow:
    """One image with its job: everything a card and the detail view show."""

    image_id: int
    job_id: int
    manifest_id: int
    job_key: str
    op: str
    job_state: str
    stage: str
    replica: int
    request: dict[str, Any]
    model: str | None
    source: str | None
    source_sha256: str | None
    source_id: str | None
    parent_id: int | None
    cost_micros: int
    estimate_micros: int
    num_images: int
    #: images the job's answer had (the cost is split over them)
    billed: int
    index: int
    enhanced_prompt: str | None
    seed: int | None
    resolution: str | None
    local_path: str | None
    sha256: str | None
    image_state: str
    width: int | None
    height: int | None
    verdict: str | None

    @property
    def prompt(self) -> str | None:
        """The prompt as written in the manifest (the request's); a JSON prompt's summary."""
        value = self.request.get("prompt")
        if isinstance(value, str):
            return value
        ep = CATALOG.get(self.op)
        return summary_of(ep, self.request) or None if ep is not None else None

    @property
    def cost_per_image_micros(self) -> int:
        """The job's cost split over its billed images (its estimate's, while it is not paid)."""
        if self.cost_micros:
            return self.cost_micros // max(1, self.billed)
        return self.unit_estimate_micros

    @property
    def unit_estimate_micros(self) -> int:
        """The planned price of one image of the job (what the cost filter compares)."""
        return self.estimate_micros // max(1, self.num_images)


@dataclass(frozen=True)
class GalleryPage:
    """A page of images, and the cursors of the pages around it (None: there is none)."""

    rows: list[GalleryRow]
    next_after: int | None
    prev_before: int | None


@dataclass(frozen=True)
class ImageDetail:
    """One image, the other images of its job, of its parent job and of its child jobs."""

    row: GalleryRow
    siblings: list[GalleryRow]
    parent: list[GalleryRow]
    children: list[GalleryRow]
    prev_id: int | None
    next_id: int | None


@dataclass(frozen=True)
class JobFields:
    """What the review's field summary needs of a job (requests never change once planned)."""

    id: int
    op: str
    request: str
    estimate_micros: int
    num_images: int


def _jsonb() -> Any:
    """PostgreSQL's JSONB type (its dialect imported on first use)."""
    from sqlalchemy.dialects.postgresql import JSONB

    return JSONB


class GalleryReads(LedgerBase):
    """The part of the `Ledger` the gallery pages read from."""

    def _field(self, name: str) -> ColumnElement[Any]:
        """The request's field ``name``, as the backend's JSON value."""
        if not FIELD_NAME.match(name):
            raise ValueError(f"not a request field name: {name!r}")
        if self.is_sqlite:
            return func.json_extract(jobs.c.request, f'$."{name}"')
        return cast(jobs.c.request, _jsonb()).op("->")(name)

    def _field_text(self, name: str) -> ColumnElement[str]:
        if self.is_sqlite:
            return type_coerce(self._field(name), String)
        return cast(jobs.c.request, _jsonb()).op("->>", return_type=String)(name)

    def _field_is(self, name: str, value: Any) -> ColumnElement[bool]:
        column = self._field(name)
        if value is None:
            return column.is_(None)
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if self.is_sqlite:
            # json_extract gives SQL values (text, integer, real) and minified JSON for objects
            return column.is_(func.json_extract(bindparam(None, text, type_=String), "$"))
        return column == cast(bindparam(None, text, type_=String), _jsonb())

    def _conditions(self, manifest_id: int, wanted: GalleryFilter) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [jobs.c.manifest_id == manifest_id]
        if wanted.op is not None:
            where.append(jobs.c.op == wanted.op)
        if wanted.image_state is not None:
            where.append(images.c.state == wanted.image_state)
        if wanted.pick == UNREVIEWED:
            where.append(picks.c.verdict.is_(None))
        elif wanted.pick is not None:
            where.append(picks.c.verdict == wanted.pick)
        if wanted.job:
            where.append(jobs.c.key.startswith(wanted.job.lower(), autoescape=True))
        if wanted.prompt:
            where.append(self._field_text("prompt").icontains(wanted.prompt, autoescape=True))
        if wanted.enhanced:
            where.append(images.c.prompt.icontains(wanted.enhanced, autoescape=True))
        if wanted.source_id is not None:
            where.append(jobs.c.source_id == wanted.source_id)
        if wanted.seed is not None:
            where.append(images.c.seed == wanted.seed)
        if wanted.cost_micros is not None:
            where.append(jobs.c.estimate_micros == wanted.cost_micros * jobs.c.num_images)
        where.extend(self._field_is(name, value) for name, value in wanted.fields)
        return where

    def _rows(self) -> Select[Any]:
        billed = images.alias("billed")
        count = select(func.count()).select_from(billed).where(billed.c.job_id == jobs.c.id).scalar_subquery()
        return (
            select(
                images.c.id.label("image_id"),
                images.c.job_id,
                jobs.c.manifest_id,
                jobs.c.key,
                jobs.c.op,
                jobs.c.state.label("job_state"),
                jobs.c.stage,
                jobs.c.replica,
                jobs.c.request,
                jobs.c.model,
                jobs.c.source,
                jobs.c.source_sha256,
                jobs.c.source_id,
                jobs.c.parent_id,
                jobs.c.cost_micros,
                jobs.c.estimate_micros,
                jobs.c.num_images,
                count.label("billed"),
                images.c.index.label("image_index"),
                images.c.prompt.label("enhanced_prompt"),
                images.c.seed,
                images.c.resolution,
                images.c.local_path,
                images.c.sha256,
                images.c.state.label("image_state"),
                images.c.width,
                images.c.height,
                picks.c.verdict,
            )
            .select_from(images)
            .join(jobs, jobs.c.id == images.c.job_id)
            .outerjoin(picks, picks.c.image_id == images.c.id)
        )

    @verb
    async def gallery_page(
        self,
        manifest_id: int,
        wanted: GalleryFilter,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 48,
    ) -> GalleryPage:
        """A page of the manifest's images in the order they were recorded, from a cursor.

        ``after``: the images after that image id (the next page); ``before``:
        the ones just before it (the previous page); neither: the first page.
        """
        where = self._conditions(manifest_id, wanted)
        query = self._rows().where(*where)
        if before is not None:
            query = query.where(images.c.id < before).order_by(images.c.id.desc())
        else:
            if after is not None:
                query = query.where(images.c.id > after)
            query = query.order_by(images.c.id)
        async with self.engine.connect() as conn:
            found = [_gallery_row(r) for r in await conn.execute(query.limit(limit + 1))]
        more = len(found) > limit
        rows = found[:limit]
        if before is not None:
            rows.reverse()
            return GalleryPage(rows, rows[-1].image_id if rows else None, rows[0].image_id if more else None)
        next_after = rows[-1].image_id if more else None
        prev_before = rows[0].image_id if after is not None and rows else None
        return GalleryPage(rows, next_after, prev_before)

    @verb
    async def gallery_count(self, manifest_id: int, wanted: GalleryFilter, cap: int = COUNT_CAP) -> int:
        """How many of the manifest's images the filter lets through, counted up to ``cap`` + 1.

        Counting stops there: an exact count of a filtered 100,000-image
        manifest would read every job, for a figure nobody needs exactly.
        """
        matching = (
            select(images.c.id)
            .select_from(images)
            .join(jobs, jobs.c.id == images.c.job_id)
            .where(*self._conditions(manifest_id, wanted))
        )
        if wanted.pick is not None:
            matching = matching.outerjoin(picks, picks.c.image_id == images.c.id)
        query = select(func.count()).select_from(matching.limit(cap + 1).subquery())
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    @verb
    async def image_detail(self, image_id: int, related: int = 8) -> ImageDetail | None:
        """One image with its job, its job's other images, its parent's and its children's images."""
        async with self.engine.connect() as conn:
            found = (await conn.execute(self._rows().where(images.c.id == image_id))).first()
            if found is None:
                return None
            row = _gallery_row(found)
            siblings = await conn.execute(
                self._rows().where(jobs.c.id == row.job_id, images.c.id != image_id).order_by(images.c.index)
            )
            parent: Sequence[Any] = []
            if row.parent_id is not None:
                parent = (
                    await conn.execute(
                        self._rows().where(jobs.c.id == row.parent_id).order_by(images.c.index).limit(related)
                    )
                ).all()
            children = await conn.execute(
                self._rows().where(jobs.c.parent_id == row.job_id).order_by(images.c.id).limit(related)
            )
            mine = select(images.c.id).join(jobs, jobs.c.id == images.c.job_id)
            mine = mine.where(jobs.c.manifest_id == row.manifest_id)
            prev_id = await conn.scalar(
                mine.where(images.c.id < image_id).order_by(images.c.id.desc()).limit(1)
            )
            next_id = await conn.scalar(mine.where(images.c.id > image_id).order_by(images.c.id).limit(1))
            return ImageDetail(
                row=row,
                siblings=[_gallery_row(r) for r in siblings],
                parent=[_gallery_row(r) for r in parent],
                children=[_gallery_row(r) for r in children],
                prev_id=prev_id,
                next_id=next_id,
            )

    @verb
    async def image_file(self, image_id: int) -> tuple[int, str | None, str | None] | None:
        """(manifest id, local path, sha256) of an image, or None if there is no such image."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(jobs.c.manifest_id, images.c.local_path, images.c.sha256)
                    .join(jobs, jobs.c.id == images.c.job_id)
                    .where(images.c.id == image_id)
                )
            ).first()
        return None if row is None else (row.manifest_id, row.local_path, row.sha256)

    @verb
    async def has_image_at(self, manifest_id: int, path: str) -> bool:
        """Whether ``path`` is the recorded file of one of the manifest's images."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(images.c.id)
                    .join(jobs, jobs.c.id == images.c.job_id)
                    .where(jobs.c.manifest_id == manifest_id, images.c.local_path == path)
                    .limit(1)
                )
            ).first()
        return row is not None

    @verb
    async def job_source(self, job_id: int) -> tuple[int, str | None, str | None] | None:
        """(manifest id, source, source sha256) of a job, or None if there is no such job."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(jobs.c.manifest_id, jobs.c.source, jobs.c.source_sha256).where(jobs.c.id == job_id)
                )
            ).first()
        return None if row is None else (row.manifest_id, row.source, row.source_sha256)

    @verb
    async def job_fields_after(self, manifest_id: int, after_id: int, limit: int = 20_000) -> list[JobFields]:
        """The manifest's jobs with an id above ``after_id``, in id order (at most ``limit``)."""
        query = (
            select(jobs.c.id, jobs.c.op, jobs.c.request, jobs.c.estimate_micros, jobs.c.num_images)
            .where(jobs.c.manifest_id == manifest_id, jobs.c.id > after_id)
            .order_by(jobs.c.id)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [JobFields(*row) for row in await conn.execute(query)]


def _gallery_row(row: Any) -> GalleryRow:
    return GalleryRow(
        image_id=row.image_id,
        job_id=row.job_id,
        manifest_id=row.manifest_id,
        job_key=row.key,
        op=row.op,
        job_state=row.job_state,
        stage=row.stage,
        replica=row.replica,
        request=json.loads(row.request),
        model=row.model,
        source=row.source,
        source_sha256=row.source_sha256,
        source_id=row.source_id,
        parent_id=row.parent_id,
        cost_micros=row.cost_micros,
        estimate_micros=row.estimate_micros,
        num_images=row.num_images,
        billed=int(row.billed or 0),
        index=row.image_index,
        enhanced_prompt=row.enhanced_prompt,
        seed=row.seed,
        resolution=row.resolution,
        local_path=row.local_path,
        sha256=row.sha256,
        image_state=row.image_state,
        width=row.width,
        height=row.height,
        verdict=row.verdict,
    )
