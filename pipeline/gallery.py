"""`ideobatch gallery`: one self-contained HTML contact sheet of a run's images.

The page needs no server, and shows the same cards and filters as the live
gallery of `ideobatch serve` (the templates are shared): what differs
between jobs (matrix values), the prompt as written and as rewritten, the
catalog id, seed, model and price; the filters run in the page. Thumbnails
(256 px JPEGs, made once per image and kept by its sha256) sit in a folder
beside the HTML file and are linked relative to it, so a 10,000-image
gallery stays a small file that opens fast; each links to the full image.
Failed jobs are summarised by reason above the cards.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pipeline.ledger.gallery import GalleryFilter, GalleryRow
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.ledger.review import FailureGroup
from pipeline.reporting import manifest_id_for
from pipeline.results import IMAGE_DOWNLOADED
from pipeline.review.cards import CardView, build_card, filter_controls
from pipeline.review.fields import FieldSummary
from pipeline.review.media import read_matching
from pipeline.review.render import Templates, static_text
from pipeline.thumbnails import THUMB_PX, cached, make_thumbnail

#: images read from the ledger per query
PAGE = 1000
#: failed jobs listed per reason
FAILED_LISTED = 200


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


class StaticLinks:
    """Card links to files beside the page: thumbnails made into ``thumbs``, images where they are."""

    def __init__(self, page_dir: Path, thumbs: Path) -> None:
        self.page_dir = page_dir
        self.thumbs = thumbs

    def _file(self, row: GalleryRow) -> Path | None:
        if row.image_state != IMAGE_DOWNLOADED or not row.local_path or not row.sha256:
            return None
        path = Path(row.local_path)
        return path if path.is_file() else None

    def thumb(self, row: GalleryRow) -> str | None:
        """A thumbnail made beside the page."""
        path = self._file(row)
        made = make_thumbnail(path, row.sha256 or "", self.thumbs) if path is not None else None
        return _relative(made, self.page_dir) if made is not None else None

    def full(self, row: GalleryRow) -> str | None:
        """The image file, relative to the page."""
        path = self._file(row)
        return _relative(path, self.page_dir) if path is not None else None

    def detail(self, row: GalleryRow) -> str | None:
        """No detail view without a server: the card links to the full image."""
        return None

    def source_thumb(self, row: GalleryRow) -> str | None:
        """A URL source as it is; a local one as a thumbnail, while its bytes are the planned ones."""
        if row.source is None:
            return None
        if row.source.startswith(("http://", "https://")):
            return row.source
        sha256, source = row.source_sha256, row.source
        if sha256 is None:
            return None
        made = cached(self.thumbs, sha256, THUMB_PX, lambda: read_matching(source, sha256))
        return _relative(made, self.page_dir) if made is not None else None


async def _rows(ledger: Ledger, manifest_ids: list[int]) -> list[GalleryRow]:
    rows: list[GalleryRow] = []
    for manifest_id in manifest_ids:
        after: int | None = None
        while True:
            page = await ledger.gallery_page(manifest_id, GalleryFilter(), after=after, limit=PAGE)
            rows.extend(page.rows)
            if page.next_after is None:
                break
            after = page.next_after
    return rows


async def _summary(ledger: Ledger, manifest_ids: list[int]) -> FieldSummary:
    summary = FieldSummary()
    for manifest_id in manifest_ids:
        last = 0
        while found := await ledger.job_fields_after(manifest_id, last):
            summary.add(found)
            last = found[-1].id
    return summary


async def build_gallery(ledger_url: str, manifest: str | None, out_file: str | None) -> tuple[Path, int, int]:
    """Write the gallery; returns (path, pictures, failed jobs)."""
    async with opened_ledger(ledger_url, create=False) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        title = manifest or "all manifests"
        if manifest_id is None:
            manifest_ids = [record.id for record in await ledger.list_manifests()]
            out_file = out_file or "gallery.html"
        else:
            manifest_ids = [manifest_id]
            record = await ledger.get_manifest_by_id(manifest_id)
            out_file = out_file or str(Path(record.config["output"]["dir"]) / "gallery.html")
            title = record.name
        rows = await _rows(ledger, manifest_ids)
        summary = await _summary(ledger, manifest_ids)
        failures: list[FailureGroup] = []
        for one in manifest_ids:
            failures.extend(await ledger.failure_groups(one, examples=FAILED_LISTED))
        descriptions = [
            {"job_key": r.job_key, "text": r.text}
            async for r in ledger.export_rows(manifest_id)
            if r.text is not None
        ]
    page = Path(out_file).resolve()
    thumbs = page.parent / f"{page.stem}_thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    links = StaticLinks(page.parent, thumbs)

    def cards() -> list[CardView]:
        return [build_card(row, summary, links) for row in rows]

    made = await asyncio.to_thread(cards)
    failed = sum(group.count for group in failures)
    text = Templates().render(
        "static_gallery.html",
        static=True,
        allow_actions=False,
        title=title,
        css=static_text("review.css"),
        js=static_text("review.js"),
        controls=filter_controls(summary),
        cards=made,
        failures=failures,
        failed_count=failed,
        descriptions=descriptions,
    )
    temp = page.with_suffix(".tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, page)
    return page, len(made), failed
