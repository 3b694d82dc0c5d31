"""The review's ledger verbs on both backends: overview, filtered keyset pages, details, picks, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.fake_server import FakeServer, FaultConfig
from pipeline.ledger.gallery import UNREVIEWED, GalleryFilter
from pipeline.ledger.repository import Ledger
from tests.review_data import IMAGES, JOBS_COUNT, MANIFEST, UNSAFE_WORD, produce


@pytest.fixture
async def reviewed(tmp_path: Path, ledger_url: str, api_key: str) -> AsyncIterator[tuple[Ledger, int]]:
    """The review run recorded in a fresh ledger of each backend; (ledger, manifest id)."""
    async with FakeServer(FaultConfig(api_key=api_key, seed=5, unsafe_word=UNSAFE_WORD)) as server:
        code, summary = await produce(tmp_path, server, ledger_url=ledger_url)
    assert code == 1, summary
    ledger = await Ledger.open(ledger_url)
    try:
        record = await ledger.get_manifest(MANIFEST)
        assert record is not None
        yield ledger, record.id
    finally:
        await ledger.close()


async def test_review_verbs_agree_with_the_run(reviewed: tuple[Ledger, int]) -> None:
    """Overview, filters on request fields and text, keyset pages, picks, detail and failures on one run."""
    ledger, manifest_id = reviewed
    overview = await ledger.overview()
    (progress,) = overview.manifests
    assert progress.jobs == {"succeeded": JOBS_COUNT - 1, "failed": 1}
    assert progress.images == {"downloaded": IMAGES}
    assert progress.failures == {"unsafe": 1}
    assert progress.finished_recently == JOBS_COUNT
    assert overview.workers == []

    async def count(**wanted: object) -> int:
        return await ledger.gallery_count(manifest_id, GalleryFilter(**wanted))  # type: ignore[arg-type]

    assert await count() == IMAGES
    assert await count(fields=(("style_type", "ANIME"),)) == 2
    assert await count(fields=(("style_type", None),)) == 3
    assert await count(fields=(("style_type", "ANIME"), ("model", None))) == 2
    assert await count(fields=(("model", "V_2_TURBO"),)) == 1
    assert await count(op="remix") == 2
    assert await count(prompt="RED fox") == 4
    assert await count(prompt="100%_") == 0
    assert await count(source_id="SKU-7") == 1
    assert await count(cost_micros=50_000) == 1
    assert await count(job="ZZ") == 0
    assert await count(fields=(("seed", 10**30),)) == 0  # larger than any column holds
    assert await count(fields=(("color_palette", {"name": "PASTEL"}),)) == 0

    # keyset pages of two: every image once, in order, and back again
    seen, after = [], None
    while True:
        page = await ledger.gallery_page(manifest_id, GalleryFilter(), after=after, limit=2)
        seen.extend(row.image_id for row in page.rows)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(seen)
    assert len(seen) == IMAGES
    back = await ledger.gallery_page(manifest_id, GalleryFilter(), before=seen[4], limit=2)
    assert [row.image_id for row in back.rows] == seen[2:4]
    assert back.prev_before == seen[2]

    first, second = seen[0], seen[1]
    assert await ledger.set_pick(first, "picked")
    assert await ledger.set_pick(second, "rejected")
    assert await ledger.set_pick(second, "picked")
    assert await ledger.set_pick(first, None)
    assert not await ledger.set_pick(10_000_000, "picked")
    assert await count(pick="picked") == 1
    assert await count(pick=UNREVIEWED) == IMAGES - 1
    overview = await ledger.overview()
    assert overview.manifests[0].picks == {"picked": 1}

    remixes = (await ledger.gallery_page(manifest_id, GalleryFilter(op="remix"))).rows
    chained = next(row for row in remixes if row.parent_id is not None)
    detail = await ledger.image_detail(chained.image_id)
    assert detail is not None
    assert detail.row.source is not None
    assert [p.prompt for p in detail.parent] == ["a grey wolf"]
    assert detail.parent[0].local_path == detail.row.source
    assert detail.prev_id is not None

    (group,) = await ledger.failure_groups(manifest_id)
    assert (group.reason, group.count) == ("unsafe", 1)
    assert group.examples[0].prompt == "a forbidden fox"

    (metrics,) = await ledger.metrics()
    assert metrics.requests[200] == JOBS_COUNT - 1
    assert metrics.requests[422] == 1
    assert metrics.latency_count == JOBS_COUNT
    assert metrics.latency_buckets[-1] == JOBS_COUNT
