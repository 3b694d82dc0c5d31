"""The ledger's contract: every verb of `Ledger`, run against SQLite and PostgreSQL alike.

Each test gets a fresh ledger (see ``tests/conftest.py``). Expired leases are
simulated by passing a ``now`` in the future, never by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pipeline.errors import LeaseLost, LedgerError
from pipeline.expand import PlannedJob
from pipeline.keys import child_key, job_key
from pipeline.ledger.base import ID_CHUNK
from pipeline.ledger.batcher import WriteBatcher
from pipeline.ledger.records import (
    Claim,
    ClaimedJob,
    Completion,
    ManifestRecord,
    Outcome,
    Response,
    to_micros,
)
from pipeline.ledger.repository import Ledger
from pipeline.ledger.tables import attempts
from pipeline.results import (
    IMAGE_DOWNLOADED,
    IMAGE_EXPIRED,
    IMAGE_FAILED,
    IMAGE_PENDING,
    IMAGE_WITHHELD,
    ApiResult,
    DownloadOutcome,
    GeneratedImage,
)

NAME = "contract"
LEASE_S = 60.0
PRICE = Decimal("0.08")
COST = to_micros(PRICE)


# --- building blocks ------------------------------------------------------------------


def planned(
    prompt: str,
    *,
    rank: int = 0,
    stage: str = "0",
    op: str = "generate",
    model: str | None = "V_2",
    num_images: int = 1,
    price: Decimal = PRICE,
    replica: int = 0,
) -> PlannedJob:
    """A job as expansion would yield it, with its real key."""
    request: dict[str, Any] = {"prompt": prompt, "num_images": num_images, "aspect_ratio": "ASPECT_16_9"}
    if model is not None:
        request["model"] = model
    return PlannedJob(
        key=job_key(op, request, None, replica),
        op=op,
        request=request,
        stage=stage,
        rank=rank,
        replica=replica,
        model=model,
        num_images=num_images,
        cost_usd=price * num_images,
    )


def described(url: str, *, rank: int = 0) -> PlannedJob:
    """A describe job of a catalog image."""
    return PlannedJob(
        key=job_key("describe", {}, url, 0),
        op="describe",
        request={},
        stage="1",
        rank=rank,
        replica=0,
        model=None,
        num_images=1,
        cost_usd=Decimal("0.01"),
        source=url,
        source_id=f"sku-{rank}",
    )


def child_of(parent: ClaimedJob, index: int, prompt: str) -> PlannedJob:
    """A chained generate job made from one result of ``parent``."""
    request = {"prompt": prompt, "model": "V_2", "num_images": 1}
    return PlannedJob(
        key=child_key(parent.key, f"{parent.stage}.0", index, "generate", request, 0),
        op="generate",
        request=request,
        stage=f"{parent.stage}.0",
        rank=parent.rank,
        replica=0,
        model="V_2",
        num_images=1,
        cost_usd=PRICE,
        parent_key=parent.key,
    )


def many(count: int, prefix: str = "job", stage: str = "0") -> Iterator[PlannedJob]:
    """``count`` distinct generate jobs of one stage, ranked in order."""
    for i in range(count):
        yield planned(f"{prefix} {i}: a lighthouse on a cliff at dusk", rank=i, stage=stage)


def images_result(*safe: bool) -> ApiResult:
    """A generate answer: one image per flag; an unsafe one is withheld (no URL)."""
    return ApiResult(
        images=tuple(
            GeneratedImage(
                index=i,
                url=f"https://ideogram.example/img/{i}.png" if ok else None,
                prompt=f"enhanced prompt {i}",
                resolution="1312x736",
                seed=1000 + i,
                is_image_safe=ok,
                style_type="REALISTIC",
            )
            for i, ok in enumerate(safe)
        ),
        created=time.time(),
    )


def downloaded(index: int) -> DownloadOutcome:
    """An image fetched and stored."""
    return DownloadOutcome(
        index=index,
        state=IMAGE_DOWNLOADED,
        path=f"out/generate/img-{index}.png",
        sha256=f"{index:064x}",
        bytes=2048,
        width=1312,
        height=736,
    )


async def save(ledger: Ledger, *, budget_usd: str | None = None, name: str = NAME) -> ManifestRecord:
    """Save a manifest the way `run` does."""
    return await ledger.save_manifest(
        name=name,
        sha256="a" * 64,
        path="/work/jobs/contract.yaml",
        base_dir="/work/jobs",
        config={"provider": {"kind": "ideogram", "api_key_env": "IDEOGRAM_API_KEY"}},
        budget_micros=to_micros(Decimal(budget_usd)) if budget_usd is not None else None,
    )


async def plan(ledger: Ledger, record: ManifestRecord, jobs: Iterable[PlannedJob]) -> None:
    """Plan jobs into a manifest."""
    await ledger.plan_jobs(record.id, jobs)


async def claim_one(ledger: Ledger, record: ManifestRecord, owner: str = "w1", **kwargs: Any) -> ClaimedJob:
    """Claim exactly one job."""
    claim = await ledger.claim_jobs(record.id, owner, 1, LEASE_S, **kwargs)
    assert len(claim.jobs) == 1
    return claim.jobs[0]


async def attempt_rows(ledger: Ledger, job_id: int) -> list[Any]:
    """The attempts recorded for a job, in order (read directly: no verb lists them)."""
    async with ledger.engine.connect() as conn:
        result = await conn.execute(
            select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.id)
        )
        return list(result.all())


@pytest.fixture
async def record(ledger: Ledger) -> ManifestRecord:
    """A saved manifest without a budget."""
    return await save(ledger)


# --- manifests and planning ----------------------------------------------------------


async def test_closing_twice_is_harmless(ledger_url: str) -> None:
    """`close` after `close` (an error path, then a `finally`) raises nothing."""
    ledger = await Ledger.open(ledger_url)
    await save(ledger)
    await ledger.close()
    await ledger.close()


async def test_save_manifest_creates_then_updates_in_place(ledger: Ledger) -> None:
    """Saving a manifest again updates its settings and keeps its id and its jobs."""
    first = await save(ledger)
    await plan(ledger, first, many(3))
    again = await ledger.save_manifest(
        name=NAME,
        sha256="b" * 64,
        path=None,
        base_dir="/elsewhere",
        config={"provider": {"kind": "crazyrouter"}},
        budget_micros=5_000_000,
    )
    assert again.id == first.id
    assert (again.sha256, again.base_dir, again.budget_micros) == ("b" * 64, "/elsewhere", 5_000_000)
    assert again.config == {"provider": {"kind": "crazyrouter"}}
    assert (await ledger.get_manifest(NAME)) == again
    assert (await ledger.get_manifest_by_id(first.id)) == again
    assert await ledger.get_manifest("unknown") is None
    other = await save(ledger, name="other")
    assert [m.name for m in await ledger.list_manifests()] == [NAME, "other"]
    assert (await ledger.status(first.id)).jobs == {"pending": 3}
    assert (await ledger.status(other.id)).jobs == {}


async def test_plan_jobs_counts_by_op_and_model(ledger: Ledger, record: ManifestRecord) -> None:
    """Planning reports total, new, per (op, model) counts and the estimated cost."""
    jobs = [*many(5), planned("big", model="V_2_TURBO", num_images=4, price=Decimal("0.05"))]
    jobs += [described(f"https://cdn.example/{i}.jpg", rank=i) for i in range(2)]
    counts = await ledger.plan_jobs(record.id, iter(jobs))
    assert (counts.total, counts.new) == (8, 8)
    assert counts.by_op_model == {("generate", "V_2"): 5, ("generate", "V_2_TURBO"): 1, ("describe", None): 2}
    assert counts.estimate_micros == 5 * COST + 4 * 50_000 + 2 * 10_000
    status = await ledger.status(record.id)
    assert status.by_op == {"generate": {"pending": 6}, "describe": {"pending": 2}}


async def test_plan_jobs_commits_each_batch_as_it_streams(ledger: Ledger, record: ManifestRecord) -> None:
    """Full batches are written while the stream is still being read, not at its end."""

    def broken_stream() -> Iterator[PlannedJob]:
        yield from many(10)
        raise RuntimeError("the prompts file went away")

    with pytest.raises(RuntimeError, match="went away"):
        await ledger.plan_jobs(record.id, broken_stream(), batch=4)
    assert (await ledger.status(record.id)).jobs == {"pending": 8}


async def test_plan_jobs_is_idempotent(ledger: Ledger, record: ManifestRecord) -> None:
    """Re-planning writes nothing new and leaves the state of known jobs alone."""
    first = await ledger.plan_jobs(record.id, many(30), batch=7)
    job = await claim_one(ledger, record)
    await ledger.complete_jobs("w1", [Completion(job.id)])
    again = await ledger.plan_jobs(record.id, many(30), batch=7)
    assert (first.total, first.new) == (30, 30)
    assert (again.total, again.new) == (30, 0)
    assert (await ledger.status(record.id)).jobs == {"pending": 29, "succeeded": 1}
    grown = await ledger.plan_jobs(record.id, many(32))
    assert (grown.total, grown.new) == (32, 2)


async def test_job_states_answers_known_keys_only(ledger: Ledger, record: ManifestRecord) -> None:
    """`job_states` maps each known key to its state, across lookup chunks, and omits unknown keys."""
    jobs = list(many(ID_CHUNK + 50))
    await plan(ledger, record, jobs)
    job = await claim_one(ledger, record)
    states = await ledger.job_states(record.id, [j.key for j in jobs] + ["f" * 64])
    assert len(states) == len(jobs)
    assert states[job.key] == "running"
    assert sum(state == "pending" for state in states.values()) == len(jobs) - 1
    assert await ledger.job_states(record.id, []) == {}


# --- claiming -----------------------------------------------------------------------


async def test_claim_leases_lowest_rank_first_interleaving_entries(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """Claims take the lowest ranks first, so the manifest's entries take turns."""
    await plan(ledger, record, [*many(5, "a", stage="0"), *many(5, "b", stage="1")])
    now = time.time()
    claim = await ledger.claim_jobs(record.id, "w1", 4, LEASE_S, now=now)
    assert [(j.rank, j.stage) for j in claim.jobs] == [(0, "0"), (0, "1"), (1, "0"), (1, "1")]
    assert not claim.budget_blocked
    job = claim.jobs[0]
    assert job.request["prompt"] == "a 0: a lighthouse on a cliff at dusk"
    assert (job.op, job.model, job.num_images, job.attempts, job.response_recorded) == (
        "generate",
        "V_2",
        1,
        0,
        False,
    )
    other = await ledger.claim_jobs(record.id, "w2", 100, LEASE_S, now=now)
    assert len(other.jobs) == 6
    assert {j.id for j in claim.jobs}.isdisjoint(j.id for j in other.jobs)
    assert (await ledger.claim_jobs(record.id, "w3", 10, LEASE_S)).jobs == []
    assert await ledger.pending_work(record.id) == (0, 10, None)


async def test_claim_honours_limit(ledger: Ledger, record: ManifestRecord) -> None:
    """A claim never takes more than its limit, and a limit of zero takes nothing."""
    await plan(ledger, record, many(10))
    assert await ledger.claim_jobs(record.id, "w1", 0, LEASE_S) == Claim([])
    assert len((await ledger.claim_jobs(record.id, "w1", 3, LEASE_S)).jobs) == 3
    assert (await ledger.pending_work(record.id))[:2] == (7, 3)


async def test_claim_waits_for_next_attempt_at(ledger: Ledger, record: ManifestRecord) -> None:
    """A rescheduled job is not claimed before its `next_attempt_at`."""
    await plan(ledger, record, many(1))
    job = await claim_one(ledger, record)
    retry_at = time.time() + 300
    outcome = Outcome(job.id, None, "http_503", "Service Unavailable", 503, retry_at)
    assert await ledger.settle_attempts("w1", [outcome], final=False) == {job.id}
    assert (await ledger.claim_jobs(record.id, "w1", 5, LEASE_S)).jobs == []
    assert (await ledger.claim_jobs(record.id, "w1", 5, LEASE_S, now=retry_at - 1)).jobs == []
    again = await claim_one(ledger, record, now=retry_at)
    assert again.id == job.id


async def test_claim_reserves_budget_and_stops_at_it(ledger: Ledger) -> None:
    """Claims reserve each job's estimate; a job that would pass the budget is not claimed."""
    record = await save(ledger, budget_usd="0.20")
    await plan(ledger, record, many(5))
    claim = await ledger.claim_jobs(record.id, "w1", 5, LEASE_S)
    assert len(claim.jobs) == 2
    assert claim.budget_blocked
    reserved = await ledger.get_manifest_by_id(record.id)
    assert (reserved.reserved_micros, reserved.spent_micros) == (2 * COST, 0)
    blocked = await ledger.claim_jobs(record.id, "w2", 5, LEASE_S)
    assert blocked == Claim([], blocked_manifests=(record.id,))
    # paying for one moves its reservation into spend; still no room for a third job
    first = claim.jobs[0]
    await ledger.record_responses("w1", [Response(first.id, None, images_result(True), COST)])
    paid = await ledger.get_manifest_by_id(record.id)
    assert (paid.reserved_micros, paid.spent_micros) == (COST, COST)
    assert (await ledger.claim_jobs(record.id, "w2", 5, LEASE_S)).budget_blocked
    # a retry gives the other reservation back: its job fits again
    second = claim.jobs[1]
    await ledger.settle_attempts("w1", [Outcome(second.id, None, "timeout", "read timeout")], final=False)
    assert (await ledger.get_manifest_by_id(record.id)).reserved_micros == 0
    retried = await ledger.claim_jobs(record.id, "w2", 5, LEASE_S)
    assert [j.id for j in retried.jobs] == [second.id]
    assert retried.budget_blocked


async def test_claim_of_a_paid_job_reserves_nothing(ledger: Ledger) -> None:
    """A job whose paid response is recorded is claimed again at no cost to the budget."""
    record = await save(ledger, budget_usd="0.08")
    await plan(ledger, record, many(2))
    job = await claim_one(ledger, record)
    await ledger.record_responses("w1", [Response(job.id, None, images_result(True), COST)])
    await ledger.release_jobs("w1", [job.id])
    claim = await ledger.claim_jobs(record.id, "w2", 5, LEASE_S)
    assert [(j.id, j.response_recorded) for j in claim.jobs] == [(job.id, True)]
    assert claim.budget_blocked
    assert (await ledger.get_manifest_by_id(record.id)).reserved_micros == 0


# --- attempts, responses, completion ------------------------------------------------------


async def test_record_attempts_numbers_attempts_of_owned_jobs(ledger: Ledger, record: ManifestRecord) -> None:
    """Each sent request gets an attempt row numbered per job; jobs not held are left out."""
    await plan(ledger, record, many(3))
    mine = await ledger.claim_jobs(record.id, "w1", 2, LEASE_S)
    theirs = await claim_one(ledger, record, owner="w2")
    run_id = await ledger.start_run(owner="w1", kind="run", manifest_id=record.id, host="h", pid=1)
    ids = [j.id for j in mine.jobs]
    sent = await ledger.record_attempts("w1", run_id, [*ids, theirs.id])
    assert set(sent) == set(ids)
    assert await attempt_rows(ledger, theirs.id) == []
    rows = await attempt_rows(ledger, ids[0])
    assert [(r.number, r.sent, r.run_id, r.ended_at, r.in_doubt) for r in rows] == [
        (1, True, run_id, None, False)
    ]
    await ledger.settle_attempts("w1", [Outcome(ids[0], sent[ids[0]], "http_500", "boom", 500)], final=False)
    again = await claim_one(ledger, record, owner="w1", now=time.time() + 1)
    assert (again.id, again.attempts) == (ids[0], 1)
    second = await ledger.record_attempts("w1", None, [again.id])
    assert [r.number for r in await attempt_rows(ledger, again.id)] == [1, 2]
    assert second[again.id] != sent[ids[0]]


async def test_record_responses_stores_images_descriptions_and_spend(ledger: Ledger) -> None:
    """A paid answer stores its images (pending or withheld) and descriptions, and moves spend."""
    record = await save(ledger, budget_usd="10")
    await plan(
        ledger, record, [planned("trio", num_images=3), described("https://cdn.example/a.jpg", rank=1)]
    )
    claim = await ledger.claim_jobs(record.id, "w1", 2, LEASE_S)
    generate, describe = claim.jobs
    assert (await ledger.get_manifest_by_id(record.id)).reserved_micros == 3 * COST + 10_000
    sent = await ledger.record_attempts("w1", None, [generate.id, describe.id])
    done = await ledger.record_responses(
        "w1",
        [
            Response(generate.id, sent[generate.id], images_result(True, False, True), 3 * COST),
            Response(
                describe.id, sent[describe.id], ApiResult(descriptions=("a red barn", "a farm")), 10_000
            ),
        ],
    )
    assert done == {generate.id: None, describe.id: None}
    stored = await ledger.images_of(generate.id)
    assert [(i.index, i.state, i.is_image_safe) for i in stored] == [
        (0, IMAGE_PENDING, True),
        (1, IMAGE_WITHHELD, False),
        (2, IMAGE_PENDING, True),
    ]
    assert stored[0].remote_url == "https://ideogram.example/img/0.png"
    assert (stored[0].prompt, stored[0].seed, stored[0].resolution) == ("enhanced prompt 0", 1000, "1312x736")
    assert stored[1].remote_url is None
    assert await ledger.descriptions_of(describe.id) == ["a red barn", "a farm"]
    money = await ledger.get_manifest_by_id(record.id)
    assert (money.spent_micros, money.reserved_micros) == (3 * COST + 10_000, 0)
    [attempt] = await attempt_rows(ledger, generate.id)
    assert (attempt.http_status, attempt.error_kind) == (200, None)
    assert attempt.ended_at is not None
    assert (await ledger.status(record.id)).jobs == {"running": 2}


async def test_complete_jobs_records_downloads_and_plans_children(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """Completion stores download outcomes, marks the job succeeded and plans its children with it."""
    await plan(ledger, record, many(1))
    parent = await claim_one(ledger, record)
    await ledger.record_responses("w1", [Response(parent.id, None, images_result(True, True), 2 * COST)])
    children = [child_of(parent, 0, "first, studio lighting"), child_of(parent, 1, "second, studio lighting")]
    done = await ledger.complete_jobs(
        "w1", [Completion(parent.id, downloads=[downloaded(0), downloaded(1)], children=children)]
    )
    assert done == {parent.id}
    stored = await ledger.images_of(parent.id)
    assert [(i.state, i.local_path, i.sha256) for i in stored] == [
        (IMAGE_DOWNLOADED, "out/generate/img-0.png", f"{0:064x}"),
        (IMAGE_DOWNLOADED, "out/generate/img-1.png", f"{1:064x}"),
    ]
    states = await ledger.job_states(record.id, [parent.key, *(c.key for c in children)])
    assert states == {parent.key: "succeeded", children[0].key: "pending", children[1].key: "pending"}
    claimed = await ledger.claim_jobs(record.id, "w2", 5, LEASE_S)
    assert sorted(j.key for j in claimed.jobs) == sorted(c.key for c in children)
    assert {j.parent_id for j in claimed.jobs} == {parent.id}
    assert {j.stage for j in claimed.jobs} == {"0.0"}


async def test_complete_jobs_stores_a_response_not_yet_recorded(ledger: Ledger) -> None:
    """A completion carrying the response (all images withheld) records it and its cost."""
    record = await save(ledger, budget_usd="1")
    await plan(ledger, record, many(1))
    job = await claim_one(ledger, record)
    [attempt_id] = (await ledger.record_attempts("w1", None, [job.id])).values()
    response = Response(job.id, attempt_id, images_result(False), COST)
    completion = Completion(job.id, downloads=[DownloadOutcome(0, IMAGE_WITHHELD)], response=response)
    assert await ledger.complete_jobs("w1", [completion]) == {job.id}
    assert [(i.state, i.remote_url) for i in await ledger.images_of(job.id)] == [(IMAGE_WITHHELD, None)]
    money = await ledger.get_manifest_by_id(record.id)
    assert (money.spent_micros, money.reserved_micros) == (COST, 0)
    status = await ledger.status(record.id)
    assert (status.jobs, status.images) == ({"succeeded": 1}, {IMAGE_WITHHELD: 1})


async def test_complete_jobs_with_failure_kind_fails_the_job(ledger: Ledger, record: ManifestRecord) -> None:
    """A completion with a failure kind (an expired URL) records the downloads and fails the job."""
    await plan(ledger, record, many(1))
    job = await claim_one(ledger, record)
    await ledger.record_responses("w1", [Response(job.id, None, images_result(True, True), 2 * COST)])
    expired = DownloadOutcome(1, IMAGE_EXPIRED, error="HTTP 410")
    completion = Completion(
        job.id,
        downloads=[downloaded(0), expired],
        failure_kind="url_expired",
        failure_message="1 image URL(s) expired before download",
    )
    assert await ledger.complete_jobs("w1", [completion]) == {job.id}
    status = await ledger.status(record.id)
    assert status.jobs == {"failed": 1}
    assert status.images == {IMAGE_DOWNLOADED: 1, IMAGE_EXPIRED: 1}
    assert status.failures == {"url_expired": (1, "1 image URL(s) expired before download")}


async def test_complete_without_a_response_releases_the_reservation(ledger: Ledger) -> None:
    """A job that ends without a recorded response holds no budget afterwards."""
    record = await save(ledger, budget_usd="1")
    await plan(ledger, record, many(1))
    job = await claim_one(ledger, record)
    completion = Completion(job.id, failure_kind="bad_source", failure_message="not an image")
    assert await ledger.complete_jobs("w1", [completion]) == {job.id}
    assert (await ledger.get_manifest_by_id(record.id)).reserved_micros == 0


async def test_write_backs_take_batches_larger_than_an_id_chunk(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """Claims, attempts and completions of more jobs than one id list holds go through whole."""
    count = ID_CHUNK + 100
    await plan(ledger, record, many(count))
    claim = await ledger.claim_jobs(record.id, "w1", count, LEASE_S)
    assert len(claim.jobs) == count
    sent = await ledger.record_attempts("w1", None, [j.id for j in claim.jobs])
    assert len(set(sent.values())) == count
    completions = [
        Completion(j.id, [downloaded(0)], Response(j.id, sent[j.id], images_result(True), COST))
        for j in claim.jobs
    ]
    assert await ledger.complete_jobs("w1", completions) == {j.id for j in claim.jobs}
    status = await ledger.status(record.id)
    assert (status.jobs, status.images, status.spent_micros) == (
        {"succeeded": count},
        {IMAGE_DOWNLOADED: count},
        count * COST,
    )


# --- failed attempts, release, leases --------------------------------------------------


async def test_settle_attempts_reschedules_a_retryable_failure(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """`final=False` puts the job back to pending with its retry time and ends the attempt in doubt."""
    await plan(ledger, record, many(2))
    job = await claim_one(ledger, record)
    [attempt_id] = (await ledger.record_attempts("w1", None, [job.id])).values()
    retry_at = time.time() + 120
    outcome = Outcome(job.id, attempt_id, "http_502", "Bad Gateway", 502, retry_at, in_doubt=True)
    assert await ledger.settle_attempts("w1", [outcome], final=False) == {job.id}
    [attempt] = await attempt_rows(ledger, job.id)
    assert (attempt.error_kind, attempt.message, attempt.http_status, attempt.in_doubt) == (
        "http_502",
        "Bad Gateway",
        502,
        True,
    )
    assert attempt.ended_at is not None
    assert await ledger.pending_work(record.id) == (2, 0, 0.0)
    assert await ledger.job_states(record.id, [job.key]) == {job.key: "pending"}
    status = await ledger.status(record.id)
    assert (status.in_doubt, status.failures) == (1, {})
    again = await claim_one(ledger, record, now=retry_at)
    assert (again.id, again.attempts) == (job.id, 1)


async def test_settle_attempts_final_fails_the_job(ledger: Ledger, record: ManifestRecord) -> None:
    """`final=True` fails the job for good with the error kind and message."""
    await plan(ledger, record, many(1))
    job = await claim_one(ledger, record)
    [attempt_id] = (await ledger.record_attempts("w1", None, [job.id])).values()
    outcome = Outcome(job.id, attempt_id, "unsafe", "prompt rejected by the safety filter", 422)
    assert await ledger.settle_attempts("w1", [outcome], final=True) == {job.id}
    status = await ledger.status(record.id)
    assert status.jobs == {"failed": 1}
    assert status.failures == {"unsafe": (1, "prompt rejected by the safety filter")}
    assert status.in_doubt == 0
    assert await ledger.pending_work(record.id) == (0, 0, None)


async def test_release_jobs_returns_them_pending_with_unanswered_attempts_in_doubt(ledger: Ledger) -> None:
    """Released jobs are pending again, their budget is freed, and sent unanswered attempts are in doubt."""
    record = await save(ledger, budget_usd="1")
    await plan(ledger, record, many(4))
    claim = await ledger.claim_jobs(record.id, "w1", 4, LEASE_S)
    ids = [j.id for j in claim.jobs]
    await ledger.record_attempts("w1", None, ids[:2])
    await ledger.release_jobs("w1", ids[:1])
    assert (await ledger.pending_work(record.id))[:2] == (1, 3)
    await ledger.release_jobs("w1", None)
    assert (await ledger.pending_work(record.id))[:2] == (4, 0)
    assert (await ledger.status(record.id)).in_doubt == 2
    [attempt] = await attempt_rows(ledger, ids[1])
    assert (attempt.error_kind, attempt.in_doubt) == ("cancelled", True)
    assert (await ledger.get_manifest_by_id(record.id)).reserved_micros == 0
    again = await ledger.claim_jobs(record.id, "w2", 4, LEASE_S)
    assert sorted(j.id for j in again.jobs) == sorted(ids)
    await ledger.release_jobs("w1", None)  # holds nothing any more: a no-op
    assert (await ledger.pending_work(record.id))[:2] == (0, 4)


async def test_renew_leases_extends_only_the_owners_leases(ledger: Ledger, record: ManifestRecord) -> None:
    """Renewed leases survive a reclaim that would have taken them; other workers' do not."""
    await plan(ledger, record, many(3))
    now = time.time()
    mine = await ledger.claim_jobs(record.id, "w1", 2, 10, now=now)
    theirs = await claim_one(ledger, record, owner="w2", now=now)
    await ledger.start_run(owner="w1", kind="worker", manifest_id=record.id, host="h", pid=1)
    assert await ledger.renew_leases("w1", 3600) == {j.id for j in mine.jobs}
    assert await ledger.reclaim_expired(now=now + LEASE_S + 1) == 1
    states = await ledger.job_states(record.id, [j.key for j in [*mine.jobs, theirs]])
    assert states == {mine.jobs[0].key: "running", mine.jobs[1].key: "running", theirs.key: "pending"}
    assert await ledger.renew_leases("w2", 3600) == set()


async def test_reclaim_expired_returns_jobs_and_counts_sent_attempts_in_doubt(ledger: Ledger) -> None:
    """An expired lease is reclaimed: the job is pending, its reservation freed, its sent attempt in doubt."""
    record = await save(ledger, budget_usd="1")
    await plan(ledger, record, many(2))
    now = time.time()
    claim = await ledger.claim_jobs(record.id, "w1", 2, LEASE_S, now=now)
    sent_job, unsent_job = claim.jobs
    await ledger.record_attempts("w1", None, [sent_job.id])
    assert await ledger.reclaim_expired(now=now + LEASE_S - 1) == 0
    assert await ledger.reclaim_expired(now=now + LEASE_S + 1) == 2
    assert (await ledger.pending_work(record.id))[:2] == (2, 0)
    [attempt] = await attempt_rows(ledger, sent_job.id)
    assert (attempt.error_kind, attempt.in_doubt) == ("lease_expired", True)
    assert await attempt_rows(ledger, unsent_job.id) == []
    assert (await ledger.status(record.id)).in_doubt == 1
    assert (await ledger.get_manifest_by_id(record.id)).reserved_micros == 0


async def test_a_worker_whose_lease_was_reclaimed_cannot_write_but_its_paid_answer_is_kept(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """After its lease is reclaimed, the old worker's write-backs are refused, but for a paid answer.

    The answer is recorded and the old worker takes the job back: the new one
    can no longer send a request for it (`pipeline.ledger.late_answers`).
    """
    await plan(ledger, record, many(1))
    now = time.time()
    job = await claim_one(ledger, record, owner="old", now=now)
    [attempt_id] = (await ledger.record_attempts("old", None, [job.id])).values()
    assert await ledger.reclaim_expired(now=now + LEASE_S + 1) == 1
    taken = await claim_one(ledger, record, owner="new")
    assert taken.id == job.id
    response = Response(job.id, attempt_id, images_result(True), COST)
    assert await ledger.record_attempts("old", None, [job.id]) == {}
    assert await ledger.complete_jobs("old", [Completion(job.id)]) == set()
    assert (
        await ledger.settle_attempts("old", [Outcome(job.id, attempt_id, "timeout", "t")], final=True)
        == set()
    )
    assert await ledger.images_of(job.id) == []
    assert await ledger.record_responses("old", [response]) == {job.id: None}
    assert await ledger.record_attempts("new", None, [job.id]) == {}
    assert len(await ledger.images_of(job.id)) == 1
    assert await ledger.complete_jobs("new", [Completion(job.id)]) == set()
    assert await ledger.complete_jobs("old", [Completion(job.id, [downloaded(0)])]) == {job.id}
    assert await ledger.job_states(record.id, [job.key]) == {job.key: "succeeded"}
    assert (await ledger.status(record.id)).in_doubt == 0
    assert (await ledger.get_manifest_by_id(record.id)).spent_micros == COST


async def test_write_batcher_raises_lease_lost_for_a_reclaimed_job(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """Through the `WriteBatcher`, a write for a reclaimed job raises `LeaseLost`; others commit."""
    await plan(ledger, record, many(2))
    now = time.time()
    lost = await claim_one(ledger, record, owner="old", now=now)
    kept = await claim_one(ledger, record, owner="old", now=now + 3600)
    assert await ledger.reclaim_expired(now=now + LEASE_S + 1) == 1
    batcher = WriteBatcher(ledger, "old", None)
    writer = asyncio.create_task(batcher.run())
    try:
        assert await batcher.attempt_sent(kept.id) > 0
        with pytest.raises(LeaseLost):
            await batcher.attempt_sent(lost.id)
        results = await asyncio.gather(
            batcher.complete(
                Completion(kept.id, response=Response(kept.id, None, images_result(True), COST))
            ),
            batcher.complete(Completion(lost.id)),
            batcher.settle(Outcome(lost.id, None, "timeout", "t"), final=False),
            return_exceptions=True,
        )
        assert results[0] is None
        assert [type(r) for r in results[1:]] == [LeaseLost, LeaseLost]
    finally:
        await batcher.close()
        await writer
    assert await ledger.job_states(record.id, [kept.key, lost.key]) == {
        kept.key: "succeeded",
        lost.key: "pending",
    }


@pytest.mark.parametrize("dirt", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
async def test_write_batcher_records_the_rest_of_a_batch_when_the_database_refuses_one_row(
    ledger: Ledger, record: ManifestRecord, dirt: str
) -> None:
    """A paid answer the database refuses fails alone; the answers batched with it are recorded.

    Issue 18, item 3: text no ledger stores (a NUL, refused by PostgreSQL; a
    lone surrogate, by both drivers) took the whole batched write-back down,
    so its clean neighbours were paid for again on every re-run.
    """
    # SQLite stores a NUL in text: there, all three are recorded
    refusing = not (dirt == "\x00" and ledger.is_sqlite)
    await plan(ledger, record, many(3))
    jobs = [await claim_one(ledger, record) for _ in range(3)]
    refused = ApiResult(
        images=(
            GeneratedImage(
                index=0,
                url="https://ideogram.example/img/0.png",
                prompt=f"enhanced {dirt} prompt",
                resolution="1312x736",
                seed=1000,
                is_image_safe=True,
                style_type="REALISTIC",
            ),
        ),
        created=time.time(),
    )
    batcher = WriteBatcher(ledger, "w1", None)
    writer = asyncio.create_task(batcher.run())
    try:
        results = await asyncio.gather(
            batcher.response(Response(jobs[0].id, None, images_result(True), COST)),
            batcher.response(Response(jobs[1].id, None, refused, COST)),
            batcher.response(Response(jobs[2].id, None, images_result(True), COST)),
            return_exceptions=True,
        )
        transactions = batcher.transactions
    finally:
        await batcher.close()
        ended = await asyncio.gather(writer, return_exceptions=True)
    assert transactions == 1  # the three answers were one batch
    assert results[0] is None, results
    assert results[2] is None, results
    assert ended == [None]  # the writer goes on
    money = await ledger.get_manifest_by_id(record.id)
    if not refusing:
        assert results[1] is None, results
        assert [len(await ledger.images_of(job.id)) for job in jobs] == [1, 1, 1]
        assert money.spent_micros == 3 * COST
        return
    assert isinstance(results[1], LedgerError), results
    assert f"refused to record job {jobs[1].id}" in str(results[1])
    assert [len(await ledger.images_of(job.id)) for job in jobs] == [1, 0, 1]
    assert money.spent_micros == 2 * COST


# --- runs and locks ----------------------------------------------------------------------


async def test_runs_dead_workers_are_reclaimed(ledger: Ledger, record: ManifestRecord) -> None:
    """`reclaim_dead` frees the jobs and lock of runs never ended and marks them crashed."""
    await plan(ledger, record, many(4))
    await ledger.start_run(owner="dead", kind="run", manifest_id=record.id, host="h1", pid=111)
    await ledger.start_run(owner="alive", kind="worker", manifest_id=record.id, host="h1", pid=222)
    finished = await ledger.start_run(owner="done", kind="run", manifest_id=record.id, host="h1", pid=333)
    await ledger.start_run(owner="away", kind="worker", manifest_id=record.id, host="h2", pid=111)
    await ledger.end_run(finished, "completed", {"run": {"succeeded": 3}})
    assert sorted(await ledger.unfinished_runs("h1")) == [("alive", 222), ("dead", 111)]
    await ledger.claim_jobs(record.id, "dead", 3, LEASE_S)
    await ledger.claim_jobs(record.id, "alive", 1, LEASE_S)
    assert await ledger.acquire_lock(record.id, "dead", LEASE_S)
    assert await ledger.reclaim_dead([]) == 0
    assert await ledger.reclaim_dead(["dead"]) == 3
    assert await ledger.pending_work(record.id) == (3, 1, 0.0)
    assert await ledger.unfinished_runs("h1") == [("alive", 222)]
    assert await ledger.acquire_lock(record.id, "alive", LEASE_S)
    runs = {r["owner"]: r for r in (await ledger.status(record.id)).runs}
    assert runs["dead"]["outcome"] == "crashed"
    assert (runs["done"]["outcome"], runs["done"]["jobs_done"]) == ("completed", 3)


async def test_lock_refuses_a_second_owner_until_released_or_expired(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """The run lock is exclusive, re-entrant for its owner, and taken over once expired."""
    assert await ledger.acquire_lock(record.id, "a", LEASE_S)
    assert not await ledger.acquire_lock(record.id, "b", LEASE_S)
    assert await ledger.acquire_lock(record.id, "a", LEASE_S)
    await ledger.release_lock(record.id, "b")  # not the owner: no effect
    assert not await ledger.acquire_lock(record.id, "b", LEASE_S)
    await ledger.release_lock(record.id, "a")
    assert await ledger.acquire_lock(record.id, "b", -1)  # already expired when taken
    assert await ledger.acquire_lock(record.id, "c", LEASE_S)
    assert not await ledger.acquire_lock(record.id, "b", LEASE_S)


# --- retry, reporting, export ----------------------------------------------------------------


async def test_reset_jobs_retries_failures_and_drops_expired_results(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """`reset_jobs` makes failed jobs pending; results of expired URLs are dropped, others kept."""
    await plan(ledger, record, many(3))
    claim = await ledger.claim_jobs(record.id, "w1", 3, LEASE_S)
    expired, partial, rejected = claim.jobs
    await ledger.record_responses(
        "w1", [Response(j.id, None, images_result(True), COST) for j in (expired, partial)]
    )
    await ledger.complete_jobs(
        "w1",
        [
            Completion(expired.id, [DownloadOutcome(0, IMAGE_EXPIRED)], failure_kind="url_expired"),
            Completion(
                partial.id, [DownloadOutcome(0, IMAGE_FAILED, error="reset")], failure_kind="download_failed"
            ),
        ],
    )
    sent = await ledger.record_attempts("w1", None, [rejected.id])
    outcome = Outcome(rejected.id, sent[rejected.id], "unsafe", "rejected", 422)
    await ledger.settle_attempts("w1", [outcome], final=True)
    assert await ledger.reset_jobs(record.id, states=["failed"], reason="unsafe") == 1
    assert (await ledger.status(record.id)).jobs == {"pending": 1, "failed": 2}
    assert await ledger.reset_jobs(record.id, states=["failed"], reason=None) == 2
    assert (await ledger.status(record.id)).jobs == {"pending": 3}
    assert await ledger.images_of(expired.id) == []
    assert [i.state for i in await ledger.images_of(partial.id)] == [IMAGE_FAILED]
    again = {j.id: j for j in (await ledger.claim_jobs(record.id, "w2", 3, LEASE_S)).jobs}
    assert {i: (j.attempts, j.response_recorded) for i, j in again.items()} == {
        expired.id: (0, False),
        partial.id: (0, True),
        rejected.id: (0, False),
    }
    assert await ledger.reset_jobs(record.id, states=["failed"], reason=None) == 0


async def test_pending_work_counts_and_earliest_due(ledger: Ledger) -> None:
    """`pending_work` gives pending and running counts and the earliest due time, per manifest or all."""
    first, second = await save(ledger), await save(ledger, name="second")
    assert await ledger.pending_work(first.id) == (0, 0, None)
    await plan(ledger, first, many(3))
    await plan(ledger, second, many(2))
    job = await claim_one(ledger, first)
    later = time.time() + 500
    await ledger.settle_attempts(
        "w1", [Outcome(job.id, None, "http_429", "slow down", 429, later)], final=False
    )
    assert await ledger.pending_work(first.id) == (3, 0, 0.0)
    await claim_one(ledger, second)
    assert await ledger.pending_work(second.id) == (1, 1, 0.0)
    assert await ledger.pending_work() == (4, 1, 0.0)
    await ledger.claim_jobs(first.id, "w1", 5, LEASE_S)
    assert await ledger.pending_work(first.id) == (1, 2, later)


async def test_status_reports_counts_money_doubt_and_failures(ledger: Ledger) -> None:
    """`status` counts jobs per state and op, images, descriptions, spend, doubt and failures."""
    record = await save(ledger, budget_usd="5")
    other = await save(ledger, name="other")
    await plan(ledger, record, [*many(4), described("https://cdn.example/d.jpg", rank=9)])
    await plan(ledger, other, many(2, "other"))
    claim = await ledger.claim_jobs(record.id, "w1", 5, LEASE_S)
    ok, withheld, bad_one, bad_two, describe = claim.jobs
    sent = await ledger.record_attempts("w1", None, [j.id for j in claim.jobs])
    await ledger.complete_jobs(
        "w1",
        [
            Completion(ok.id, [downloaded(0)], Response(ok.id, sent[ok.id], images_result(True), COST)),
            Completion(
                withheld.id,
                [DownloadOutcome(0, IMAGE_WITHHELD)],
                Response(withheld.id, sent[withheld.id], images_result(False), COST),
            ),
            Completion(
                describe.id,
                response=Response(
                    describe.id, sent[describe.id], ApiResult(descriptions=("a barn",)), 10_000
                ),
            ),
        ],
    )
    await ledger.settle_attempts(
        "w1",
        [
            Outcome(bad_one.id, sent[bad_one.id], "invalid_request", "bad aspect", 400),
            Outcome(bad_two.id, sent[bad_two.id], "invalid_request", "bad aspect", 400, in_doubt=True),
        ],
        final=True,
    )
    status = await ledger.status(record.id)
    assert status.manifest == NAME
    assert status.jobs == {"succeeded": 3, "failed": 2}
    assert status.by_op == {"generate": {"succeeded": 2, "failed": 2}, "describe": {"succeeded": 1}}
    assert status.images == {IMAGE_DOWNLOADED: 1, IMAGE_WITHHELD: 1}
    assert status.descriptions == 1
    assert (status.spent_micros, status.reserved_micros, status.budget_micros) == (
        2 * COST + 10_000,
        0,
        5_000_000,
    )
    assert status.in_doubt == 1
    assert status.failures == {"invalid_request": (2, "bad aspect")}
    everything = await ledger.status(None)
    assert everything.manifest is None
    assert everything.jobs == {"succeeded": 3, "failed": 2, "pending": 2}


async def test_export_rows_streams_images_and_descriptions_with_parent_keys(
    ledger: Ledger, record: ManifestRecord
) -> None:
    """`export_rows` yields one row per image and per description, children naming their parent's key."""
    await plan(ledger, record, [described("https://cdn.example/cat.jpg")])
    parent = await claim_one(ledger, record)
    result = ApiResult(descriptions=("a cat on a sofa",))
    child = child_of(parent, 0, "a cat on a sofa, studio lighting")
    await ledger.complete_jobs(
        "w1", [Completion(parent.id, response=Response(parent.id, None, result, 10_000), children=[child])]
    )
    job = await claim_one(ledger, record)
    assert job.key == child.key
    response = Response(job.id, None, images_result(True, False), 2 * COST)
    await ledger.complete_jobs(
        "w1", [Completion(job.id, [downloaded(0), DownloadOutcome(1, IMAGE_WITHHELD)], response)]
    )
    await plan(ledger, await save(ledger, name="other"), many(1))
    rows = [row async for row in ledger.export_rows(record.id)]
    assert [(r.job_key, r.index, r.image_state, r.text) for r in rows] == [
        (child.key, 0, IMAGE_DOWNLOADED, None),
        (child.key, 1, IMAGE_WITHHELD, None),
        (parent.key, 0, None, "a cat on a sofa"),
    ]
    image, _, text = rows
    assert (image.parent_key, image.manifest, image.op, image.state, image.model) == (
        parent.key,
        NAME,
        "generate",
        "succeeded",
        "V_2",
    )
    assert image.request["prompt"] == "a cat on a sofa, studio lighting"
    assert (image.path, image.sha256, image.bytes, image.width, image.height) == (
        "out/generate/img-0.png",
        f"{0:064x}",
        2048,
        1312,
        736,
    )
    assert (image.seed, image.resolution, image.enhanced_prompt, image.cost_micros) == (
        1000,
        "1312x736",
        "enhanced prompt 0",
        2 * COST,
    )
    assert (text.parent_key, text.op, text.source, text.source_id) == (
        None,
        "describe",
        "https://cdn.example/cat.jpg",
        "sku-0",
    )
    assert len([row async for row in ledger.export_rows(None)]) == 3


# --- concurrency ----------------------------------------------------------------------------


async def test_concurrent_claimers_never_share_a_job(ledger_url: str) -> None:
    """Four workers with their own connection pools claim 200 jobs between them, none twice."""
    setup = await Ledger.open(ledger_url)
    try:
        record = await save(setup)
        await plan(setup, record, many(200))
    finally:
        await setup.close()
    workers = [await Ledger.open(ledger_url) for _ in range(4)]

    async def drain(worker: Ledger, owner: str) -> list[int]:
        taken: list[int] = []
        while claim := (await worker.claim_jobs(record.id, owner, 7, LEASE_S)).jobs:
            taken.extend(j.id for j in claim)
        return taken

    try:
        taken = await asyncio.gather(*(drain(w, f"w{i}") for i, w in enumerate(workers)))
        ids = [job_id for part in taken for job_id in part]
        assert len(ids) == 200
        assert len(set(ids)) == 200
        assert await workers[0].pending_work(record.id) == (0, 200, None)
    finally:
        for worker in workers:
            await worker.close()
