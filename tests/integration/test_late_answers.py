"""Paid answers that arrive after their job's lease passed to another worker (`late_answers`).

Both backends; expired leases are simulated with a ``now`` in the future.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from pipeline.fake_server import FakeServer
from pipeline.ledger.late_answers import EXTRA_MESSAGE
from pipeline.ledger.records import ClaimedJob, Completion, ManifestRecord, Outcome, Response
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.ledger.tables import jobs
from pipeline.recovery import KeptAnswer
from pipeline.results import IMAGE_DOWNLOADED, IMAGE_PENDING, ApiResult, DownloadOutcome, GeneratedImage
from tests.integration.conftest import run, write_manifest
from tests.integration.test_ledger_contract import (
    COST,
    LEASE_S,
    NAME,
    attempt_rows,
    claim_one,
    described,
    downloaded,
    many,
    plan,
    save,
)


def answer(job: ClaimedJob, attempt_id: int, tag: str, images: int = 1) -> Response:
    """A paid answer whose image URLs are its own."""
    result = ApiResult(
        images=tuple(
            GeneratedImage(i, f"https://cdn.example/{tag}/{i}.png", "p", "1024x1024", i, True)
            for i in range(images)
        )
    )
    return Response(job.id, attempt_id, result, COST * images)


async def taken_over(ledger: Ledger, record: ManifestRecord) -> tuple[ClaimedJob, int, int]:
    """A job whose lease "old" lost with its call in flight; "new" took it and sent its own call."""
    await plan(ledger, record, many(1))
    now = time.time()
    job = await claim_one(ledger, record, owner="old", now=now)
    [old_attempt] = (await ledger.record_attempts("old", None, [job.id])).values()
    assert await ledger.reclaim_expired(now=now + LEASE_S + 1) == 1
    assert (await claim_one(ledger, record, owner="new")).id == job.id
    [new_attempt] = (await ledger.record_attempts("new", None, [job.id])).values()
    return job, old_attempt, new_attempt


@pytest.mark.parametrize("first", ["old", "new"])
async def test_both_answers_of_a_job_paid_twice_are_recorded_and_it_completes_once(
    ledger: Ledger, first: str
) -> None:
    """Whichever answer is recorded first is the job's; the other is kept as extra results."""
    record = await save(ledger, budget_usd="10")
    job, old_attempt, new_attempt = await taken_over(ledger, record)
    responses = {"old": answer(job, old_attempt, "old"), "new": answer(job, new_attempt, "new", images=2)}
    second = "new" if first == "old" else "old"
    assert await ledger.record_responses(first, [responses[first]]) == {job.id: None}
    extra_from = 1 if first == "old" else 2
    assert await ledger.record_responses(second, [responses[second]]) == {job.id: extra_from}
    # the write run again (its commit's reply lost) answers the same, records nothing twice
    assert await ledger.record_responses(second, [responses[second]]) == {job.id: extra_from}
    stored = await ledger.images_of(job.id)
    assert [(i.index, i.remote_url) for i in stored] == [
        (n, image.url)
        for n, image in enumerate([*responses[first].result.images, *responses[second].result.images])
    ]
    assert {i.state for i in stored} == {IMAGE_PENDING}
    # the first to record holds the job: the other can neither complete it nor send again
    assert await ledger.complete_jobs(second, [Completion(job.id)]) == set()
    assert await ledger.record_attempts(second, None, [job.id]) == {}
    firsts = [downloaded(i.index) for i in responses[first].result.images]
    assert await ledger.complete_jobs(first, [Completion(job.id, firsts)]) == {job.id}
    extra = [
        DownloadOutcome(extra_from + i.index, IMAGE_DOWNLOADED, f"out/extra-{i.index}.png", "f" * 64, 9, 1, 1)
        for i in responses[second].result.images
    ]
    await ledger.record_downloads(job.id, extra)
    assert {i.state for i in await ledger.images_of(job.id)} == {IMAGE_DOWNLOADED}
    assert await ledger.job_states(record.id, [job.key]) == {job.key: "succeeded"}
    money = await ledger.get_manifest_by_id(record.id)
    assert (money.spent_micros, money.reserved_micros) == (3 * COST, 0)
    status = await ledger.status(record.id)
    assert status.in_doubt == 0
    rows = {a.id: a for a in await attempt_rows(ledger, job.id)}
    extra_attempt = new_attempt if first == "old" else old_attempt
    assert rows[extra_attempt].http_status == 200
    assert rows[extra_attempt].message == EXTRA_MESSAGE


async def test_a_late_description_is_numbered_after_the_jobs_own(ledger: Ledger) -> None:
    """A describe job answered twice keeps both descriptions, the extra one after its own."""
    record = await save(ledger)
    await plan(ledger, record, [described("https://cdn.example/a.jpg")])
    now = time.time()
    job = await claim_one(ledger, record, owner="old", now=now)
    [old_attempt] = (await ledger.record_attempts("old", None, [job.id])).values()
    assert await ledger.reclaim_expired(now=now + LEASE_S + 1) == 1
    assert (await claim_one(ledger, record, owner="new")).id == job.id
    [new_attempt] = (await ledger.record_attempts("new", None, [job.id])).values()
    own = Response(job.id, new_attempt, ApiResult(descriptions=("a red barn",)), 10_000)
    assert await ledger.complete_jobs("new", [Completion(job.id, response=own)]) == {job.id}
    late = Response(job.id, old_attempt, ApiResult(descriptions=("a barn, red",)), 10_000)
    assert await ledger.record_responses("old", [late]) == {job.id: 1}
    assert await ledger.descriptions_of(job.id) == ["a red barn", "a barn, red"]
    assert (await ledger.get_manifest_by_id(record.id)).spent_micros == 20_000


async def test_a_job_claimed_again_by_the_run_still_calling_for_it_is_not_sent_twice(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    """The run's lease on a job in flight ran out (forged here) and its own next claim took the job.

    The task still waiting for the answer goes on with it; before, the claim
    started a second task that paid for the job again.
    """
    manifest = write_manifest(tmp_path, "- op: generate\n  prompts: [one slow call]\n")
    fake_server.state.hold()
    running = asyncio.create_task(run(manifest, fake_server, tmp_path))
    try:
        await fake_server.state.wait_until(lambda s: s.inflight_images == 1, timeout_s=30)
        async with opened_ledger(f"sqlite:///{tmp_path}/ledger.db") as ledger:
            assert await ledger.reclaim_expired(now=time.time() + 3600) == 1
            record = await ledger.get_manifest("t")
            assert record is not None
            for _ in range(600):
                if (await ledger.pending_work(record.id))[:2] == (0, 1):  # claimed again
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the run did not claim the job again")
        await asyncio.sleep(0.5)  # time enough for a second task to send its call
    finally:
        fake_server.state.release()
    code, summary = await asyncio.wait_for(running, 30)
    assert code == 0, summary
    stats = fake_server.state.stats()
    assert (stats["requests"], stats["billed"]) == (1, 1)
    assert summary["spend_usd"] == pytest.approx(stats["billed_usd"])
    assert summary["in_doubt"] == 0


async def test_an_answer_kept_on_disk_for_a_job_another_worker_finished_is_added_once(ledger: Ledger) -> None:
    """A kept answer (the ledger was away) whose job another worker answered and finished meanwhile.

    Before, the kept answer's cost and images were dropped on import.
    """
    record = await save(ledger)
    job, old_attempt, new_attempt = await taken_over(ledger, record)
    own = answer(job, new_attempt, "new")
    assert await ledger.complete_jobs("new", [Completion(job.id, [downloaded(0)], response=own)]) == {job.id}
    late = answer(job, old_attempt, "old")
    kept = KeptAnswer(NAME, job.key, old_attempt, COST, late.result, (downloaded(0),))
    for _ in range(2):  # a file that could not be deleted is imported again: nothing twice
        assert await ledger.import_answers(record.id, [kept]) == {job.key}
    stored = await ledger.images_of(job.id)
    assert [(i.index, i.remote_url, i.state) for i in stored] == [
        (0, own.result.images[0].url, IMAGE_DOWNLOADED),
        (1, late.result.images[0].url, IMAGE_DOWNLOADED),
    ]
    assert (await ledger.get_manifest_by_id(record.id)).spent_micros == 2 * COST
    assert (await ledger.status(record.id)).in_doubt == 0


async def test_a_failed_call_of_a_worker_that_lost_the_job_still_ends_its_attempt(ledger: Ledger) -> None:
    """A 502 after the job passed to another worker: the job is untouched, the attempt in doubt."""
    record = await save(ledger)
    job, old_attempt, _new_attempt = await taken_over(ledger, record)
    failed = Outcome(job.id, old_attempt, "server_error", "502 Bad Gateway", 502, None, True)
    assert await ledger.settle_attempts("old", [failed], final=False) == set()
    rows = {a.id: a for a in await attempt_rows(ledger, job.id)}
    assert (rows[old_attempt].http_status, rows[old_attempt].in_doubt) == (502, True)
    assert await ledger.job_states(record.id, [job.key]) == {job.key: "running"}
    assert (await ledger.status(record.id)).in_doubt == 1


async def test_a_late_answer_for_a_job_withdrawn_meanwhile_takes_it_back(ledger: Ledger) -> None:
    """Reclaimed, then withdrawn by a re-plan before the answer came: paid, so the job is finished."""
    record = await save(ledger)
    await plan(ledger, record, many(1))
    now = time.time()
    job = await claim_one(ledger, record, owner="old", now=now)
    [attempt] = (await ledger.record_attempts("old", None, [job.id])).values()
    assert await ledger.reclaim_expired(now=now + LEASE_S + 1) == 1
    async with ledger.engine.begin() as conn:  # as a plan that no longer has the job leaves it
        await conn.execute(update(jobs).where(jobs.c.id == job.id).values(state="withdrawn"))
    assert await ledger.record_responses("old", [answer(job, attempt, "old")]) == {job.id: None}
    assert await ledger.complete_jobs("old", [Completion(job.id, [downloaded(0)])]) == {job.id}
    assert await ledger.job_states(record.id, [job.key]) == {job.key: "succeeded"}
    assert (await ledger.get_manifest_by_id(record.id)).spent_micros == COST
