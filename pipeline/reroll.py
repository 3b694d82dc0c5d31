"""`ideobatch reroll`: a new job for each rejected image — the same request, a new seed, the next replica.

A replacement is an ordinary job: it has its own job key (the usual key
function, with the replica one above the rejected job's and the new seed in
the request), it is planned pending, priced with the manifest's prices and
claimed within its budget like any other, and a `then:` stage of its entry
applies to it as well. Each rejected image is replaced once: the ledger ties
the new job to the image's verdict in the same transaction.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from pipeline import endpoints
from pipeline.errors import UsageError
from pipeline.jobs import PlannedJob
from pipeline.keys import job_key
from pipeline.ledger.picks import RerollCandidate
from pipeline.ledger.repository import opened_ledger
from pipeline.pricing import PriceTable
from pipeline.reporting import manifest_id_for

#: seeds the API takes: 0 to 2**31 - 1
SEED_RANGE = 2**31


def new_seed(job_key_text: str, index: int, replica: int, old: int | None) -> int:
    """A seed for the replacement of image ``index`` of a job: derived, so a re-plan gives the same."""
    digest = hashlib.sha256(f"reroll/{job_key_text}/{index}/{replica}".encode()).digest()
    seed = int.from_bytes(digest[:4], "big") % SEED_RANGE
    return (seed + 1) % SEED_RANGE if seed == old else seed


def replacement(candidate: RerollCandidate, prices: PriceTable) -> PlannedJob:
    """The job that replaces a rejected image.

    Its request is the rejected job's with a new ``seed`` (when the op takes
    one) and, when that job asked for several images, ``num_images: 1`` (one
    image was rejected: one is paid for again).
    """
    job = candidate.job
    request = dict(job.request)
    replica = job.replica + 1
    try:
        ep = endpoints.endpoint(job.op)
    except KeyError:  # an op this ideobatch's catalog does not list: it cannot be called again
        raise UsageError(f"op {job.op!r} is not one this ideobatch can call") from None
    takes_seed = "seed" in ep.fields
    if takes_seed:
        old = request.get("seed")
        request["seed"] = new_seed(
            job.key, candidate.index, replica, old if isinstance(old, int) else candidate.seed
        )
    if ep.images(request) > 1:
        request["num_images"] = 1
    identity = f"sha256:{job.source_sha256}" if job.source_sha256 else job.source
    count = ep.images(request)
    inputs = [(i.role, i.identity) for i in job.inputs]
    return PlannedJob(
        key=job_key(job.op, request, identity, replica, inputs),
        op=job.op,
        request=request,
        stage=job.stage,
        rank=job.rank,
        replica=replica,
        model=job.model,
        num_images=count,
        cost_usd=prices.job_cost(job.op, job.model, count),
        source=job.source,
        source_sha256=job.source_sha256,
        source_id=job.source_id,
        inputs=job.inputs,
    )


async def reroll_rejected(ledger_url: str, manifest: str) -> tuple[list[PlannedJob], Decimal]:
    """Plan a replacement for every rejected image of ``manifest``; returns the jobs and their estimate."""
    async with opened_ledger(ledger_url, create=False) as ledger:
        manifest_id = await manifest_id_for(ledger, manifest)
        assert manifest_id is not None
        record = await ledger.get_manifest_by_id(manifest_id)
        prices = PriceTable(record.config.get("prices") or {})
        candidates = await ledger.reroll_candidates(manifest_id)
        planned = [(c, replacement(c, prices)) for c in candidates]
        made = await ledger.add_rerolls(manifest_id, planned) if planned else []
    return made, sum((job.cost_usd for job in made), Decimal(0))


def check_selection(rejected: bool) -> None:
    """`reroll` needs to be told what to reroll (only rejected images, for now)."""
    if not rejected:
        raise UsageError("say which images to reroll: --rejected (every rejected image not rerolled yet)")
