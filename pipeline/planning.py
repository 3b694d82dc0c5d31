"""`ideobatch plan`: what a manifest expands to, what the ledger already has, what it will cost.

Costs are given per op and price tier (a legacy op's model; a V3 op's
rendering speed, with a character reference, or an upscale factor) and say
which prices are estimates the provider has not confirmed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline import endpoints
from pipeline.errors import LedgerMissing, LedgerNotMigrated, ManifestError, PlanSuperseded
from pipeline.expand import chained_stage_refs, expand
from pipeline.fingerprint import plan_fingerprint
from pipeline.footprint import human_bytes, job_bytes
from pipeline.jobs import PlannedJob
from pipeline.ledger.faults import masked
from pipeline.ledger.records import ManifestRecord, PlanCounts, to_micros, to_usd
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.manifest import LoadedManifest, load_manifest
from pipeline.pricing import PriceTable
from pipeline.settings import RunSettings
from pipeline.validation import load_valid

LOOKUP_BATCH = 5000
#: jobs `ideobatch run` plans before its first claim; the others are planned while these run
FIRST_BATCH = 256
#: how long a plan overtaken by another command's waits for that one to complete (its run
#: meanwhile works on the jobs written so far, and does not end while it waits)
OVERTAKEN_WAIT_S = 300.0
log = logging.getLogger("ideobatch")


async def _open_existing(url: str | None) -> Ledger | None:
    """The ledger if it already exists (planning never creates one)."""
    if url is None:
        return None
    try:
        return await Ledger.open(url, upgrade=False, create=False)
    except (LedgerNotMigrated, LedgerMissing):
        return None


async def plan_report(
    manifest: str,
    ledger_url: str | None,
    *,
    where: str | None = None,
    loaded: LoadedManifest | None = None,
) -> dict[str, Any]:
    """Counts per op and model, jobs already done in the ledger, and the estimated cost.

    ``where`` names the ledger in the report (default: its URL, password
    masked); a ledger that does not exist (or ``ledger_url`` None) means
    nothing is done yet, and none is created. ``loaded``: the manifest,
    validated already.
    """
    if loaded is None:
        loaded, _counts = load_valid(manifest)
    name = loaded.manifest.name
    prices = PriceTable(loaded.manifest.prices)
    rows: dict[tuple[str, str | None], dict[str, Any]] = {}
    ledger = await _open_existing(ledger_url)
    found = ledger is not None
    try:
        record = await ledger.get_manifest(name) if ledger else None
        batch: list[PlannedJob] = []

        async def flush() -> None:
            states = await ledger.job_states(record.id, [j.key for j in batch]) if ledger and record else {}
            for job in batch:
                row = rows.setdefault(
                    (job.op, job.model),
                    {
                        "op": job.op,
                        "model": job.model,
                        "estimated": prices.is_estimate(job.op, job.model),
                        "unit_usd": float(prices.unit_price(job.op, job.model)),
                        "jobs": 0,
                        "images": 0,
                        "done": 0,
                        "failed": 0,
                        "estimate_micros": 0,
                        "remaining_micros": 0,
                        "disk_bytes": 0,
                        "remaining_disk_bytes": 0,
                    },
                )
                state = states.get(job.key)
                cost = to_micros(job.cost_usd)
                disk = job_bytes(job.op, job.request, job.num_images)
                row["jobs"] += 1
                row["images"] += job.num_images if endpoints.endpoint(job.op).makes_images else 0
                row["estimate_micros"] += cost
                row["disk_bytes"] += disk
                if state == "succeeded":
                    row["done"] += 1
                else:
                    row["remaining_micros"] += cost
                    row["remaining_disk_bytes"] += disk
                    row["failed"] += state == "failed"
            batch.clear()

        for job in expand(loaded):
            batch.append(job)
            if len(batch) >= LOOKUP_BATCH:
                await flush()
        await flush()
    finally:
        if ledger:
            await ledger.close()
    table = [
        {
            **{k: v for k, v in row.items() if not k.endswith("micros")},
            "estimate_usd": round(to_usd(row["estimate_micros"]), 6),
            "remaining_usd": round(to_usd(row["remaining_micros"]), 6),
        }
        for row in sorted(rows.values(), key=lambda r: (r["op"], r["model"] or ""))
    ]
    stages = sum(_count_stages(spec.then) for spec in loaded.manifest.jobs)
    return {
        "manifest": name,
        "file": str(loaded.path),
        "ledger": where or (masked(ledger_url) if ledger_url else None),
        "ledger_found": found,
        "jobs": sum(r["jobs"] for r in table),
        "images": sum(r["images"] for r in table),
        "done": sum(r["done"] for r in table),
        "failed": sum(r["failed"] for r in table),
        "to_run": sum(r["jobs"] - r["done"] for r in table),
        "estimate_usd": round(sum(r["estimate_usd"] for r in table), 6),
        "remaining_usd": round(sum(r["remaining_usd"] for r in table), 6),
        # a rough figure: `pipeline.footprint` (bytes per pixel of the ops' image sizes)
        "disk_bytes": sum(r["disk_bytes"] for r in table),
        "remaining_disk_bytes": sum(r["remaining_disk_bytes"] for r in table),
        "chained_stages": stages,
        "by_op_model": table,
    }


@dataclass
class Plan:
    """A manifest's plan as it is written: its record, the counts so far, the jobs still to write.

    The plan is marked complete in the ledger (``plan_complete``, with the
    fingerprint it came from) only by `finish`, after its last job: a run
    killed before that plans again, and a plan the ledger calls complete
    holds every job of the manifest.
    """

    record: ManifestRecord
    #: jobs written so far (None: nothing had changed, nothing is written)
    counts: PlanCounts | None
    config: dict[str, Any]
    rest: Iterator[PlannedJob] | None = None
    #: the references of the manifest's `then:` stages (`expand.chained_stage_refs`)
    stages: frozenset[str] = frozenset()
    #: jobs `finish` added that the ledger did not have
    later_new: int = 0
    beside_a_run: bool = field(default=False)

    @property
    def complete(self) -> bool:
        """Whether every job is written and the plan marked complete."""
        return self.rest is None

    async def finish(self, ledger: Ledger) -> PlanCounts | None:
        """Write the jobs left, then mark the plan complete; the whole plan's counts (None: unchanged)."""
        if self.rest is None:
            return self.counts
        try:
            rest = await ledger.plan_jobs(
                self.record.id, self.rest, beside_a_run=self.beside_a_run, plan_seq=self.record.plan_seq
            )
        except PlanSuperseded:
            # the manifest was planned again meanwhile (edited? or two runs started together):
            # that plan's jobs and withdrawals stand; jobs this one wrote that the newer one has
            # not are withdrawn once it is complete, which this one waits for (bounded)
            self.rest = None
            latest = await ledger.get_manifest_by_id(self.record.id)
            deadline = time.monotonic() + OVERTAKEN_WAIT_S
            while not latest.plan_complete and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                latest = await ledger.get_manifest_by_id(self.record.id)
            if latest.plan_complete:
                await withdraw_unplanned(ledger, latest, None)
            log.warning(
                "%s was planned again by another command while this run planned it; its jobs are as "
                "that plan has them",
                self.record.name,
            )
            return self.counts
        rest.withdrawn = await withdraw_unplanned(ledger, self.record, self.stages)
        await ledger.mark_planned(self.record.id, self.config, self.record.plan_seq)
        self.rest = None
        self.later_new = rest.new
        self.counts = (self.counts or PlanCounts()) + rest
        return self.counts


async def plan_into(
    ledger: Ledger, loaded: LoadedManifest, settings: RunSettings
) -> tuple[ManifestRecord, PlanCounts | None]:
    """Store the manifest's settings and stream its jobs into the ledger (idempotent).

    When nothing the jobs come from has changed since the last complete plan
    (`pipeline.fingerprint`), only the settings are stored: validation and
    expansion are skipped, and the counts are None. Otherwise the manifest is
    validated in full (``loaded`` may be structure-only) and re-planned.
    """
    plan = await start_plan(ledger, loaded, settings)
    return plan.record, await plan.finish(ledger)


async def start_plan(
    ledger: Ledger, loaded: LoadedManifest, settings: RunSettings, *, first: int | None = None
) -> Plan:
    """`plan_into`'s first part: the settings stored and, with ``first``, that many jobs committed.

    The jobs are claimable as soon as this returns; `Plan.finish` writes the
    others (a run does it while the first ones run) and only then marks the
    plan complete. A manifest of no more than ``first`` jobs is complete on return.
    """
    fingerprint = plan_fingerprint(loaded)
    config = {**settings.to_config(), "plan_fingerprint": fingerprint}
    budget = settings.limits.budget_usd
    stored = await ledger.get_manifest(settings.name)
    unchanged = stored is not None and stored.plan_complete and stored.plan_fingerprint == fingerprint
    if not unchanged:
        loaded, _counts = load_valid(str(loaded.path))
    record = await ledger.save_manifest(
        name=settings.name,
        sha256=loaded.sha256,
        path=str(loaded.path.resolve()),
        base_dir=settings.base_dir,
        config=config if unchanged else settings.to_config(),
        budget_micros=None if budget is None else to_micros(budget),
        replanning=not unchanged,
    )
    if unchanged:
        return Plan(record, None, config)
    plan = Plan(record, PlanCounts(), config, expand(loaded), chained_stage_refs(loaded.manifest.jobs))
    if first is None:
        return plan
    if stored is not None:
        # a re-plan: the jobs an edit removed are withdrawn once it is complete, and none of them
        # may be claimed before; so this plan is written whole before the run claims anything
        await plan.finish(ledger)
        return plan
    assert plan.rest is not None
    plan.beside_a_run = True
    try:
        plan.counts = await ledger.plan_jobs(
            record.id, itertools.islice(plan.rest, first), complete=False, plan_seq=record.plan_seq
        )
    except PlanSuperseded:
        # another command planned the manifest meanwhile: `finish` (beside the run) waits for it
        return plan
    if plan.counts.total < first:  # that was every job
        await plan.finish(ledger)
    return plan


async def withdraw_unplanned(ledger: Ledger, record: ManifestRecord, stages: frozenset[str] | None) -> int:
    """Withdraw the jobs the manifest no longer has; call it once, when its plan is complete.

    A job an edit took out of the manifest is never run (nor paid for); what
    was already sent keeps its history (`pipeline.ledger.withdrawals`).
    ``stages``: the manifest's `then:` stages (None: unknown, a plan overtaken).
    """
    return await ledger.withdraw_unplanned(record.id, record.plan_seq, stages)


def load_structure(path: str) -> LoadedManifest:
    """The manifest's structure, validated; a structural error reports every problem of the file."""
    try:
        return load_manifest(path)
    except ManifestError:
        load_valid(path)  # raises with the problems of every section at once
        raise


async def save_plan(manifest: str, ledger_url: str, budget_usd: float | None) -> None:
    """Store the manifest's settings and jobs in the ledger (what `run` does before working)."""
    loaded = load_structure(manifest)
    settings = RunSettings.from_manifest(loaded).with_overrides(budget_usd=budget_usd)
    async with opened_ledger(ledger_url) as ledger:
        _record, counts = await plan_into(ledger, loaded, settings)
    log_plan(settings.name, counts)


def log_plan(name: str, counts: PlanCounts | None) -> None:
    """One log line about a plan."""
    if counts is None:
        log.info("%s: nothing changed since the last plan", name)
    else:
        withdrawn = f", {counts.withdrawn} no longer in it withdrawn" if counts.withdrawn else ""
        log.info("planned %s: %d job(s), %d new%s", name, counts.total, counts.new, withdrawn)


def _count_stages(stages: Any) -> int:
    return sum(1 + _count_stages(s.then) for s in stages or [])


def render_plan(report: dict[str, Any]) -> str:
    """The plan for people: one row per op and price tier (a legacy op's tier is its model).

    A cost from a price the provider has not confirmed is marked ``*``.
    """
    rows = report["by_op_model"]
    op_width = max([9, *(len(row["op"]) for row in rows)])
    tier_width = max([11, *(len(row["model"] or "-") for row in rows)])
    lines = [f"manifest {report['manifest']} ({report['file']})"]
    lines.append(
        f"  {'op':<{op_width}} {'model/tier':<{tier_width}} {'jobs':>9} {'images':>9} {'done':>9} "
        f"{'est. USD':>11}"
    )
    for row in rows:
        mark = " *" if row.get("estimated") else ""
        lines.append(
            f"  {row['op']:<{op_width}} {row['model'] or '-':<{tier_width}} {row['jobs']:>9} "
            f"{row['images']:>9} {row['done']:>9} {row['estimate_usd']:>11.2f}{mark}"
        )
    lines.append(
        f"total {report['jobs']} job(s), {report['images']} image(s); {report['done']} already done, "
        f"{report['to_run']} to run; estimated ${report['remaining_usd']:.2f} for what is left "
        f"(${report['estimate_usd']:.2f} in all)"
    )
    lines.append(
        f"disk: about {human_bytes(report['remaining_disk_bytes'])} for the images left "
        f"({human_bytes(report['disk_bytes'])} in all; a rough estimate from each op's image size)"
    )
    if report["ledger"]:
        state = "" if report["ledger_found"] else ": none there yet, so nothing is done (none was created)"
        lines.append(f"ledger {report['ledger']}{state}")
    if any(row.get("estimated") for row in rows):
        lines.append(
            "* an estimate: the provider has not confirmed this price (set `prices:` in the manifest "
            "to use your own)"
        )
    if report["chained_stages"]:
        lines.append(
            f"plus {report['chained_stages']} chained stage(s), planned as their parents finish "
            "(not counted above)"
        )
    return "\n".join(lines)
