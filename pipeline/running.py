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
from pipeline.errors import LedgerError, LockHeld
from pipeline.exit_codes import EXIT_ABORTED, EXIT_FAILED_JOBS, EXIT_OK, EXIT_UNUSABLE
from pipeline.jobs import StopReason
from pipeline.leases import DEFAULT_LEASE_S, HOST, reclaim_dead_on_this_host
from pipeline.ledger.records import ManifestRecord
from pipeline.ledger.reports import LedgerStatus
from pipeline.ledger.repository import Ledger, opened_ledger
from pipeline.ledger.tables import FAILED, SUCCEEDED, WITHDRAWN
from pipeline.manifest import LoadedManifest, TimeoutsConfig
from pipeline.parts import Parts, merge, worst
from pipeline.planning import FIRST_BATCH, Plan, load_structure, log_plan, start_plan
from pipeline.progress import Baseline, Progress
from pipeline.recovery import forget, kept_answers, recovery_dirs
from pipeline.settings import RunSettings
from pipeline.signals import Shutdown
from pipeline.stray_images import find_strays
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
    #: processes of this machine the run is spread over (`pipeline.parts`)
    processes: int = 1


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
    parts = None
    if options.processes > 1:
        # started now, to load while this process plans; they work once the plan is complete
        parts = Parts(options.processes - 1, options.ledger_url, settings.name, options.lease_s, window)
        await parts.spawn()
    try:
        with logs.manifest_context(settings.name):
            return await _plan_and_execute(loaded, settings, api_key, window, options, parts)
    except BaseException:
        if parts is not None:
            await parts.stop()
        raise


async def _plan_and_execute(
    loaded: LoadedManifest,
    settings: RunSettings,
    api_key: str,
    window: float | None,
    options: RunOptions,
    parts: Parts | None,
) -> tuple[int, dict[str, Any]]:
    async with opened_ledger(options.ledger_url, retry_window_s=window) as ledger:
        # the first jobs are claimable at once; the others are planned while they run
        plan = await start_plan(ledger, loaded, settings, first=FIRST_BATCH)
        if plan.complete:
            log_plan(settings.name, plan.counts)
        record = plan.record
        await warn_of_strays(ledger, settings)
        owner = new_owner()
        lock = options.lock or loaded.manifest.lock
        if lock and not await ledger.acquire_lock(record.id, owner, options.lease_s):
            raise LockHeld(f"another run holds the lock of manifest {settings.name}")
        planning = None if plan.complete else asyncio.create_task(_finish(plan, ledger), name="planning")
        shutdown = None
        if parts is not None:
            shutdown = Shutdown()
            shutdown.install()
            shutdown.on_request(parts.forward)
        releaser = asyncio.create_task(parts.release_when_planned(planning)) if parts else None
        try:
            result, summary = await execute_and_summarize(
                ledger,
                owner,
                options,
                record=record,
                settings=settings,
                api_key=api_key,
                planning=planning,
                shutdown=shutdown,
                others=parts is not None,
            )
            code = exit_code(summary, result)
            if parts is not None and releaser is not None:
                await releaser
                reports = await parts.wait()
                for report in reports:
                    if report.tally is not None:
                        merge(result.tally, report.tally)
                summary = await closing_summary(ledger, record, result)
                code = worst([exit_code(summary, result), *(report.code for report in reports)])
        except BaseException:
            if releaser is not None:
                releaser.cancel()
            raise
        finally:
            if shutdown is not None:
                shutdown.uninstall()
            if planning is not None and not planning.done():  # the run failed before it could end
                await _settle(planning, interrupted=True)
            if lock:
                await ledger.release_lock(record.id, owner)
        if planning is not None and not planning.cancelled() and (error := planning.exception()):
            raise error
        return code, summary


async def _finish(plan: Plan, ledger: Ledger) -> int:
    """Write the rest of a run's plan and log it; returns the jobs it added."""
    counts = await plan.finish(ledger)
    log_plan(plan.record.name, counts)
    return plan.later_new


async def _settle(planning: asyncio.Task[int], interrupted: bool) -> None:
    """Let the planning beside a run end: cancelled if the run was interrupted, else finished.

    Cancelled, the plan stays incomplete in the ledger and the next run plans
    again (jobs already written are kept). Its error, if any, is raised later.
    """
    if interrupted:
        planning.cancel()
    await asyncio.wait({planning})


async def warn_of_strays(ledger: Ledger, settings: RunSettings) -> None:
    """Warn when the output folder holds images this ledger does not know (made with another ledger?)."""
    folders = recovery_dirs(settings.base_dir, settings.output_dir)
    if next(iter(kept_answers(folders, settings.name)), None) is not None:
        return  # images of answers kept while the ledger was away: recorded before any claim
    strays = await find_strays(ledger, settings.output_dir)
    if message := strays.message(settings.output_dir):
        log.warning("%s", message, extra={"event": "unknown_images"})


async def closing_summary(
    ledger: Ledger, record: ManifestRecord | None, result: RunResult | None
) -> dict[str, Any]:
    """The summary of a run; from this run's own counts when the ledger cannot be read."""
    try:
        return build_summary(await ledger.status(record.id if record else None), result)
    except LedgerError as exc:
        summary = build_summary(LedgerStatus(manifest=record.name if record else None), result)
        summary["ledger_unavailable"] = str(exc)
        return summary


async def take_back_kept_answers(ledger: Ledger, record: ManifestRecord, settings: RunSettings) -> int:
    """Record the paid answers an earlier run kept on disk while the ledger was away."""
    found = list(kept_answers(recovery_dirs(settings.base_dir, settings.output_dir), record.name))
    if not found:
        return 0
    try:
        recorded = await ledger.import_answers(record.id, [answer for _path, answer in found])
    except LedgerError:
        raise
    except Exception:
        # one answer the database refuses must not block the others (nor every later run)
        recorded = set()
        for path, answer in found:
            try:
                recorded |= await ledger.import_answers(record.id, [answer])
            except LedgerError:
                raise
            except Exception as exc:
                log.error("the ledger refused the kept answer %s (%s): left in place", path, exc)
    forget([path for path, answer in found if answer.job_key in recorded])
    for path, answer in found:
        if answer.job_key not in recorded:
            log.warning("kept answer %s names no job of %s: left in place", path, record.name)
    log.info("recorded %d paid answer(s) kept while the ledger was away", len(recorded))
    return len(recorded)


async def execute_and_summarize(
    ledger: Ledger,
    owner: str,
    options: RunOptions,
    *,
    record: ManifestRecord | None = None,
    settings: RunSettings | None = None,
    api_key: str | None = None,
    kind: str = "run",
    shutdown: Shutdown | None = None,
    planning: asyncio.Task[int] | None = None,
    others: bool = False,
) -> tuple[RunResult, dict[str, Any]]:
    """Run due jobs under a registered run (of ``record`` with its settings and key, or of all), and
    the summary it records as the run's end (read once, after the last job).

    ``planning``: the rest of ``record``'s plan, being written (it returns the
    jobs it added): the run does not end before it, and counts its jobs in.
    ``others``: other processes work on ``record`` for this run; the progress
    display counts their jobs in, from the ledger.
    """
    records = [record] if record is not None else await ledger.list_manifests()
    every = [settings] if settings is not None else [RunSettings.from_config(r.config) for r in records]

    async def take_back() -> None:
        for each, each_settings in zip(records, every, strict=True):
            await take_back_kept_answers(ledger, each, each_settings)

    # a dead run's kept answers are recorded before its jobs are taken back (and claimable)
    reclaimed = await reclaim_dead_on_this_host(ledger, take_back)
    if reclaimed:
        log.info("took back %d job(s) from stopped run(s)", reclaimed)
    await take_back()
    manifest_id = record.id if record is not None else None
    run_id = await ledger.start_run(
        owner=owner, kind=kind, manifest_id=manifest_id, host=HOST, pid=os.getpid()
    )
    pending, running, _due = await ledger.pending_work(manifest_id)
    label = settings.name if settings is not None else "all manifests"
    progress = Progress(
        pending + running,
        label=label,
        quiet=options.quiet,
        baseline=await baseline_of(ledger, manifest_id),
        bar=False if logs.is_json() else None,
    )
    own_shutdown = shutdown is None
    shutdown = shutdown or Shutdown()
    if own_shutdown:
        shutdown.install()
    ticker = asyncio.create_task(progress.run(), name="progress")
    if planning is not None:
        planning.add_done_callback(
            lambda task: None if task.cancelled() or task.exception() else progress.add_total(task.result())
        )
    watcher = (
        asyncio.create_task(_watch_others(ledger, manifest_id, progress), name="others")
        if others and manifest_id is not None
        else None
    )
    outcome = "crashed"
    try:
        connections = max([8, *(2 * s.limits.concurrency for s in every)])
        timeouts = every[0].timeouts if every else TimeoutsConfig()
        async with opened_session(timeouts, connections) as session:
            runner = JobRunner(
                ledger,
                owner=owner,
                run_id=run_id,
                session=session,
                shutdown=shutdown,
                progress=progress,
                manifest=record,
                settings=settings,
                api_key=api_key,
                base_url=options.base_url if record is None else None,
                max_jobs=options.max_jobs,
                lease_s=options.lease_s,
                planning=planning,
            )
            result = await runner.run()
        outcome = result.stop_reason or "finished"
    finally:
        if planning is not None:
            await _settle(planning, interrupted=shutdown.requested)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(LedgerError):
                await _look_at_others(ledger, manifest_id, progress)  # for the closing progress line
        ticker.cancel()
        progress.close()
        if own_shutdown:
            shutdown.uninstall()
        summary = await closing_summary(ledger, record, locals().get("result"))
        log.info(
            "run %s: %s",
            outcome,
            progress.line(),
            extra={"event": "run_end", "manifest": label, "counts": progress.counts()},
        )
        try:
            await ledger.end_run(run_id, outcome, summary)
        except LedgerError as exc:
            # left unended: the next run on this host marks it crashed and takes its jobs back
            log.warning("could not record how this run ended: %s", exc)
    return result, summary


#: seconds between two looks at the ledger for what a run's other processes did
OTHERS_POLL_S = 0.5


async def _watch_others(ledger: Ledger, manifest_id: int, progress: Progress) -> None:
    """Keep the progress display up to date with the jobs the run's other processes finish."""
    while True:
        await asyncio.sleep(OTHERS_POLL_S)
        with contextlib.suppress(LedgerError):  # the run itself finds out and says so
            await _look_at_others(ledger, manifest_id, progress)


async def _look_at_others(ledger: Ledger, manifest_id: int | None, progress: Progress) -> None:
    if manifest_id is None:
        return
    counts = await ledger.job_counts(manifest_id)
    spent = (await ledger.get_manifest_by_id(manifest_id)).spent_micros
    failed = counts.get(FAILED, 0)
    progress.note_ledger(counts.get(SUCCEEDED, 0) + failed, failed, spent)


async def baseline_of(ledger: Ledger, manifest_id: int | None) -> Baseline:
    """What the ledger has done already: where a resumed run's progress starts."""
    counts = await ledger.job_counts(manifest_id)
    if manifest_id is not None:
        spent = (await ledger.get_manifest_by_id(manifest_id)).spent_micros
    else:
        spent = sum(record.spent_micros for record in await ledger.list_manifests())
    failed = counts.get(FAILED, 0)
    return Baseline(
        total=sum(counts.values()) - counts.get(WITHDRAWN, 0),
        done=counts.get(SUCCEEDED, 0) + failed,
        failed=failed,
        spend_micros=spent,
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

    One loop serves them all: whatever job is due in any manifest is claimed,
    so a manifest whose jobs all wait out a Retry-After holds no other back.
    A manifest this worker cannot go on with (no key in its environment, the
    key rejected, the budget reached, its output folder unusable) is set
    aside; with ``--follow`` it is looked at again after each idle poll, so a
    raised budget is noticed. ``base_url`` replaces every manifest's provider
    base URL (a fake server). The exit code is `run`'s: 5 if a ledger or
    output folder was unusable, else 3 if a manifest was aborted or the worker
    interrupted, else 1 if a job it ran failed, else 0.
    """
    shutdown = Shutdown()
    shutdown.install()
    codes = {EXIT_OK}
    try:
        async with opened_ledger(ledger_url, retry_window_s=ledger_retry_s) as ledger:
            while not shutdown.stop.is_set():
                options = RunOptions(
                    manifest="", ledger_url=ledger_url, quiet=quiet, lease_s=lease_s, base_url=base_url
                )
                result, _summary = await execute_and_summarize(
                    ledger, new_owner(), options, kind="worker", shutdown=shutdown
                )
                codes.add(_worker_code(result))
                if result.stop_reason is not None or not follow:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(shutdown.stop.wait(), timeout=poll_s)
    finally:
        shutdown.uninstall()
    if shutdown.requested:
        codes.add(EXIT_ABORTED)
    return WorkerOutcome(_worst(codes), shutdown.requested)


def _worker_code(result: RunResult) -> int:
    """A worker pass's exit code: 5 ledger or output, 3 aborted, 1 a job failed, else 0."""
    reasons = {result.stop_reason, *result.set_aside.values()}
    if reasons & {StopReason.LEDGER, StopReason.OUTPUT}:
        return EXIT_UNUSABLE
    if reasons & {StopReason.FATAL, StopReason.BUDGET, "no key"}:
        return EXIT_ABORTED
    if result.tally.failed:
        return EXIT_FAILED_JOBS
    return EXIT_OK


#: which exit code wins when a worker has several to report
_EXIT_PRECEDENCE = (EXIT_UNUSABLE, EXIT_ABORTED, EXIT_FAILED_JOBS, EXIT_OK)


def _worst(codes: set[int]) -> int:
    return next(code for code in _EXIT_PRECEDENCE if code in codes)
