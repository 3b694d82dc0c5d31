"""The commands' work, without click: plan a manifest into the ledger, run it, serve as a worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline import logs
from pipeline.client import opened_session
from pipeline.errors import LedgerError, LockHeld, UsageError
from pipeline.exit_codes import EXIT_ABORTED, EXIT_FAILED_JOBS, EXIT_OK, EXIT_UNUSABLE
from pipeline.leases import DEFAULT_LEASE_S, HOST, reclaim_dead_on_this_host
from pipeline.ledger.records import ManifestRecord
from pipeline.ledger.reports import LedgerStatus
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.ledger.tables import FAILED, SUCCEEDED
from pipeline.manifest import LoadedManifest
from pipeline.planning import load_structure, log_plan, plan_into
from pipeline.progress import Baseline, Progress
from pipeline.recovery import forget, kept_answers
from pipeline.settings import RunSettings
from pipeline.signals import Shutdown
from pipeline.summary import build_summary, exit_code
from pipeline.worker import JobRunner, RunResult

log = logging.getLogger("ideobatch")


def new_owner() -> str:
    """A unique name for this process's leases."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class RunOptions:
    """What `ideobatch run` was asked to do."""

    manifest: str
    ledger_url: str
    concurrency: int | None = None
    budget_usd: float | None = None
    out_dir: str | None = None
    max_jobs: int | None = None
    quiet: bool = False
    lock: bool = False
    lease_s: float = DEFAULT_LEASE_S
    base_url: str | None = None
    #: seconds to wait for a ledger that does not answer (None: the manifest's, else the default)
    ledger_retry_s: float | None = None


async def run_manifest(options: RunOptions) -> tuple[int, dict[str, Any]]:
    """Plan then work through a manifest; returns the exit code and the summary."""
    loaded = load_structure(options.manifest)
    settings = RunSettings.from_manifest(loaded).with_overrides(
        concurrency=options.concurrency,
        budget_usd=options.budget_usd,
        out_dir=options.out_dir,
        base_url=options.base_url,
    )
    api_key = settings.api_key()
    logs.redact(api_key)
    window = options.ledger_retry_s if options.ledger_retry_s is not None else settings.retry.ledger_retry
    with logs.manifest_context(settings.name):
        return await _plan_and_execute(loaded, settings, api_key, window, options)


async def _plan_and_execute(
    loaded: LoadedManifest, settings: RunSettings, api_key: str, window: float | None, options: RunOptions
) -> tuple[int, dict[str, Any]]:
    async with opened_ledger(options.ledger_url, retry_window_s=window) as ledger:
        record, counts = await plan_into(ledger, loaded, settings)
        log_plan(settings.name, counts)
        owner = new_owner()
        lock = options.lock or loaded.manifest.lock
        if lock and not await ledger.acquire_lock(record.id, owner, options.lease_s):
            raise LockHeld(f"another run holds the lock of manifest {settings.name}")
        try:
            result = await execute(ledger, record, settings, api_key, owner, options)
        finally:
            if lock:
                await ledger.release_lock(record.id, owner)
        summary = await closing_summary(ledger, record, result)
        return exit_code(summary, result), summary


async def closing_summary(ledger: Ledger, record: ManifestRecord, result: RunResult | None) -> dict[str, Any]:
    """The summary of a run; from this run's own counts when the ledger cannot be read."""
    try:
        return build_summary(await ledger.status(record.id), result)
    except LedgerError as exc:
        summary = build_summary(LedgerStatus(manifest=record.name), result)
        summary["ledger_unavailable"] = str(exc)
        return summary


async def take_back_kept_answers(ledger: Ledger, record: ManifestRecord, output_dir: str) -> int:
    """Record the paid answers an earlier run kept on disk while the ledger was away."""
    found = list(kept_answers(output_dir, record.name))
    if not found:
        return 0
    recorded = await ledger.import_answers(record.id, [answer for _path, answer in found])
    forget([path for path, answer in found if answer.job_key in recorded])
    for path, answer in found:
        if answer.job_key not in recorded:
            log.warning("kept answer %s names no job of %s: left in place", path, record.name)
    log.info("recorded %d paid answer(s) kept while the ledger was away", len(recorded))
    return len(recorded)


async def execute(
    ledger: Ledger,
    record: ManifestRecord,
    settings: RunSettings,
    api_key: str,
    owner: str,
    options: RunOptions,
    *,
    kind: str = "run",
    shutdown: Shutdown | None = None,
) -> RunResult:
    """Run a planned manifest's pending jobs under a registered run."""
    reclaimed = await reclaim_dead_on_this_host(ledger)
    if reclaimed:
        log.info("took back %d job(s) from stopped run(s)", reclaimed)
    await take_back_kept_answers(ledger, record, settings.output_dir)
    run_id = await ledger.start_run(owner=owner, kind=kind, manifest_id=record.id, host=HOST, pid=os.getpid())
    pending, running, _due = await ledger.pending_work(record.id)
    progress = Progress(
        pending + running,
        label=settings.name,
        quiet=options.quiet,
        baseline=await baseline_of(ledger, record),
        bar=False if logs.is_json() else None,
    )
    own_shutdown = shutdown is None
    shutdown = shutdown or Shutdown()
    if own_shutdown:
        shutdown.install()
    ticker = asyncio.create_task(progress.run(), name="progress")
    outcome = "crashed"
    try:
        connections = max(8, settings.limits.concurrency * 2)
        async with opened_session(settings.timeouts, connections) as session:
            runner = JobRunner(
                ledger,
                record,
                settings,
                owner=owner,
                run_id=run_id,
                session=session,
                api_key=api_key,
                shutdown=shutdown,
                progress=progress,
                max_jobs=options.max_jobs,
                lease_s=options.lease_s,
            )
            result = await runner.run()
        outcome = result.stop_reason or "finished"
        return result
    finally:
        ticker.cancel()
        progress.close()
        if own_shutdown:
            shutdown.uninstall()
        summary = await closing_summary(ledger, record, locals().get("result"))
        log.info(
            "run %s: %s",
            outcome,
            progress.line(),
            extra={"event": "run_end", "manifest": settings.name, "counts": progress.counts()},
        )
        try:
            await ledger.end_run(run_id, outcome, summary)
        except LedgerError as exc:
            # left unended: the next run on this host marks it crashed and takes its jobs back
            log.warning("could not record how this run ended: %s", exc)


async def baseline_of(ledger: Ledger, record: ManifestRecord) -> Baseline:
    """What the ledger has done for the manifest already: where a resumed run's progress starts."""
    counts = await ledger.job_counts(record.id)
    fresh = await ledger.get_manifest_by_id(record.id)
    failed = counts.get(FAILED, 0)
    return Baseline(
        total=sum(counts.values()),
        done=counts.get(SUCCEEDED, 0) + failed,
        failed=failed,
        spend_micros=fresh.spent_micros,
    )


@dataclass(frozen=True)
class WorkerOutcome:
    """How `ideobatch worker` ended."""

    code: int
    interrupted: bool


async def run_worker(
    ledger_url: str,
    *,
    follow: bool,
    quiet: bool,
    lease_s: float,
    poll_s: float = 5.0,
    ledger_retry_s: float | None = None,
    base_url: str | None = None,
) -> WorkerOutcome:
    """Work on every planned manifest until none has pending jobs (forever with ``follow``).

    A manifest this worker cannot go on with (no key in its environment, the
    key rejected, the budget reached) is set aside; with ``--follow`` it is
    looked at again after each idle poll, so a raised budget is noticed.
    ``base_url`` replaces every manifest's provider base URL (a fake server).
    The exit code is `run`'s: 5 if a ledger or output folder was unusable,
    else 3 if a manifest was aborted or the worker interrupted, else 1 if a
    job it ran failed, else 0.
    """
    shutdown = Shutdown()
    shutdown.install()
    codes = {EXIT_OK}
    set_aside: dict[int, str] = {}
    try:
        async with opened_ledger(ledger_url, retry_window_s=ledger_retry_s) as ledger:
            while not shutdown.stop.is_set():
                worked = False
                for record in await ledger.list_manifests():
                    if shutdown.stop.is_set():
                        break
                    if record.id in set_aside:
                        continue
                    pending, running, _due = await ledger.pending_work(record.id)
                    if not pending and not running:
                        continue
                    settings = RunSettings.from_config(record.config).with_overrides(base_url=base_url)
                    try:
                        api_key = settings.api_key()
                    except UsageError as exc:
                        log.error("%s", exc)
                        set_aside[record.id] = "no key"
                        codes.add(EXIT_ABORTED)
                        continue
                    logs.redact(api_key)
                    worked = True
                    options = RunOptions(
                        manifest=record.name, ledger_url=ledger_url, quiet=quiet, lease_s=lease_s
                    )
                    with logs.manifest_context(record.name):
                        result = await execute(
                            ledger,
                            record,
                            settings,
                            api_key,
                            new_owner(),
                            options,
                            kind="worker",
                            shutdown=shutdown,
                        )
                    if result.tally.failed:
                        codes.add(EXIT_FAILED_JOBS)
                    if result.stop_reason in ("ledger", "output"):
                        log.error("%s: %s", record.name, result.message)
                        set_aside[record.id] = result.stop_reason
                        codes.add(EXIT_UNUSABLE)
                    elif result.stop_reason in ("fatal", "budget"):
                        log.warning("%s: %s", record.name, result.message)
                        set_aside[record.id] = result.stop_reason
                        codes.add(EXIT_ABORTED)
                if worked:
                    continue
                if not follow:
                    break
                set_aside.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(shutdown.stop.wait(), timeout=poll_s)
    finally:
        shutdown.uninstall()
    if shutdown.requested:
        codes.add(EXIT_ABORTED)
    return WorkerOutcome(_worst(codes), shutdown.requested)


#: which exit code wins when a worker has several to report
_EXIT_PRECEDENCE = (EXIT_UNUSABLE, EXIT_ABORTED, EXIT_FAILED_JOBS, EXIT_OK)


def _worst(codes: set[int]) -> int:
    return next(code for code in _EXIT_PRECEDENCE if code in codes)
