"""Read-side verbs behind `ideobatch export` and the gallery: results streamed row by row."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, select

from pipeline.ledger.base import LedgerBase
from pipeline.ledger.tables import FAILED, PICKED, descriptions, images, jobs, manifests, picks

#: rows fetched per round trip while streaming an export
EXPORT_CHUNK = 1000


@dataclass(frozen=True)
class ExportRow:
    """One produced image or description with its job (or, for a failed job, the job alone)."""

    job_id: int
    job_key: str
    op: str
    state: str
    request: dict[str, Any]
    model: str | None
    source: str | None
    source_id: str | None
    parent_key: str | None
    manifest: str
    #: the manifest's folder (relative paths in the ledger are relative to it)
    base_dir: str
    index: int | None
    enhanced_prompt: str | None
    seed: int | None
    resolution: str | None
    path: str | None
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    image_state: str | None
    text: str | None
    cost_micros: int
    error_kind: str | None
    error_message: str | None = None
    #: a person's verdict on the image (`ideobatch serve`): picked, rejected, or None
    verdict: str | None = None


class Exports(LedgerBase):
    """The part of the `Ledger` that streams results for export and the gallery."""

    def _base(self, manifest_id: int | None, states: Collection[str] | None) -> Select[Any]:
        parent = jobs.alias("parent")
        where = [jobs.c.manifest_id == manifest_id] if manifest_id is not None else []
        if states is not None:
            where.append(jobs.c.state.in_(list(states)))
        return (
            select(
                jobs.c.id.label("job_id"),
                jobs.c.key,
                jobs.c.op,
                jobs.c.state,
                jobs.c.request,
                jobs.c.model,
                jobs.c.source,
                jobs.c.source_id,
                jobs.c.cost_micros,
                jobs.c.error_kind,
                jobs.c.error_message,
                parent.c.key.label("parent_key"),
                manifests.c.name.label("manifest"),
                manifests.c.base_dir,
            )
            .select_from(jobs)
            .join(manifests, manifests.c.id == jobs.c.manifest_id)
            .outerjoin(parent, parent.c.id == jobs.c.parent_id)
            .where(*where)
        )

    async def export_rows(
        self,
        manifest_id: int | None,
        *,
        kind: str | None = None,
        states: Collection[str] | None = None,
        picked: bool = False,
    ) -> AsyncGenerator[ExportRow, None]:
        """Every produced image (``kind="images"``), description (``"descriptions"``) or both.

        Rows come ordered by job, then index, so the rows of one job are
        consecutive. ``states`` keeps only jobs in those states; ``picked``
        only the images a person picked (and no description).
        """
        base = self._base(manifest_id, states)
        queries: list[tuple[Select[Any], bool]] = []
        if kind in (None, "images"):
            image_query = (
                base.add_columns(
                    images.c.index,
                    images.c.prompt,
                    images.c.seed,
                    images.c.resolution,
                    images.c.local_path,
                    images.c.sha256,
                    images.c.bytes,
                    images.c.width,
                    images.c.height,
                    images.c.state.label("image_state"),
                    picks.c.verdict,
                )
                .join(images, images.c.job_id == jobs.c.id)
                .outerjoin(picks, picks.c.image_id == images.c.id)
                .order_by(jobs.c.id, images.c.index)
            )
            if picked:
                image_query = image_query.where(picks.c.verdict == PICKED)
            queries.append((image_query, False))
        if kind in (None, "descriptions") and not picked:
            text_query = (
                base.add_columns(descriptions.c.index, descriptions.c.text)
                .join(descriptions, descriptions.c.job_id == jobs.c.id)
                .order_by(jobs.c.id, descriptions.c.index)
            )
            queries.append((text_query, True))
        async with self._translating(), self.engine.connect() as conn:
            for query, is_text in queries:
                result = await conn.stream(query.execution_options(yield_per=EXPORT_CHUNK))
                async for row in result:
                    yield _export_row(row, text=row.text if is_text else None)

    async def failed_job_rows(self, manifest_id: int | None) -> AsyncGenerator[ExportRow, None]:
        """One row per failed job (no image columns), ordered by job."""
        query = self._base(manifest_id, (FAILED,)).order_by(jobs.c.id)
        async with self._translating(), self.engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=EXPORT_CHUNK))
            async for row in result:
                yield _export_row(row, text=None)

    async def request_fields(self, manifest_id: int | None, states: Collection[str]) -> dict[str, set[str]]:
        """The request keys the jobs in ``states`` were planned with, per op (streamed)."""
        where: list[ColumnElement[bool]] = [jobs.c.state.in_(list(states))]
        if manifest_id is not None:
            where.append(jobs.c.manifest_id == manifest_id)
        query = select(jobs.c.op, jobs.c.request).where(*where)
        fields: dict[str, set[str]] = {}
        async with self._translating(), self.engine.connect() as conn:
            result = await conn.stream(query.execution_options(yield_per=EXPORT_CHUNK))
            async for op, request in result:
                fields.setdefault(op, set()).update(json.loads(request))
        return fields


def _export_row(row: Any, text: str | None) -> ExportRow:
    mapping = row._mapping
    return ExportRow(
        job_id=row.job_id,
        job_key=row.key,
        op=row.op,
        state=row.state,
        request=json.loads(row.request),
        model=row.model,
        source=row.source,
        source_id=row.source_id,
        parent_key=row.parent_key,
        manifest=row.manifest,
        base_dir=row.base_dir,
        index=mapping.get("index"),
        enhanced_prompt=mapping.get("prompt"),
        seed=mapping.get("seed"),
        resolution=mapping.get("resolution"),
        path=mapping.get("local_path"),
        sha256=mapping.get("sha256"),
        bytes=mapping.get("bytes"),
        width=mapping.get("width"),
        height=mapping.get("height"),
        image_state=mapping.get("image_state"),
        text=text,
        cost_micros=row.cost_micros,
        error_kind=row.error_kind,
        error_message=row.error_message,
        verdict=mapping.get("verdict"),
    )
