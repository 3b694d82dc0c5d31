"""The worker loop: claim due jobs from the ledger and hand each to its executor (SPEC §6).

Shaped like procrastinate's worker: a claim loop gated by the calls in flight
and racing the stop signal; one named task per job whose done-callback wakes
the loop; side tasks (lease renewal, reclaiming expired leases, the ledger
writer) whose death stops the run; and a two-stage shutdown. The loop calls
the job, it is not the job: what one job does is `pipeline.executor`.

A loop serves one manifest (`ideobatch run`) or every manifest of the ledger
(`ideobatch worker`): it claims whatever job is due in any of them, in rank
order (so manifests take turns), and builds each manifest's executor — its
client, downloader and settings, from what planning stored in the ledger —
the first time one of its jobs is claimed. Calls to one provider account
(its base URL and key variable) share one pacing of images in flight. In a
worker, a manifest that cannot go on (no key, the key rejected, the budget
reached, its output folder unusable) is set aside while the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pipeline.account_slots import SharedSlots
from pipeline.client import IdeogramClient
from pipeline.downloads import Downloader, clean_temp_files
from pipeline.durations import human_duration
from pipeline.errors import LedgerError, OutputUnusable, UsageError
from pipeline.executor import JobExecutor
from pipeline.jobs import StopReason
from pipeline.leases import DEFAULT_LEASE_S, ENDING_POLL_S, POLL_S, reclaim_dead_on_this_host
from pipeline.ledger.accounts import account_url
from pipeline.ledger.batcher import WriteBatcher
from pipeline.ledger.records import ClaimedJob, ManifestRecord, to_usd
from pipeline.ledger.repository import Ledger
from pipeline.pacing import ImageSlots, Slots, TokenBucket
from pipeline.progress import Progress
from pipeline.redirects import RedirectPolicy
from pipeline.results import JobEnd, RunTally
from pipeline.retrying import RetryPolicy
from pipeline.settings import RunSettings
from pipeline.signals import Shutdown

log = logging.getLogger("ideobatch")

#: stops that keep jobs already claimed but not yet sent from being sent
_HALTING = frozenset({StopReason.FATAL, StopReason.INTERRUPTED})
#: in a worker, stops that concern one manifest only (it is set aside, the others go on)
_MANIFEST_STOPS = frozenset({StopReason.FATAL, StopReason.BUDGET, StopReason.OUTPUT})
#: a manifest set aside for one of these sends none of its jobs claimed but not yet sent
#: (one set aside for its budget sends them: their cost is reserved already)
_HALTING_ASIDE = frozenset({StopReason.FATAL.value, StopReason.OUTPUT.value, "no key"})


@dataclass
class RunResult:
    """How executing jobs ended."""

    tally: RunTally
    stop_reason: StopReason | None = None
    message: str | None = None
    duration_s: float = 0.0
    peak_images_in_flight: int = 0
    claimed: int = 0
    errors: list[str] = field(default_factory=list)
    #: manifests a worker set aside, and why (no key, fatal, budget, output)
    set_aside: dict[int, str] = field(default_factory=dict)

    @property
    def kept_answers(self) -> list[str]:
        """Paid answers the ledger could not take, kept on disk for the next run."""
        return self.tally.kept_answers

    @property
    def lost_leases(self) -> int:
        """Jobs another worker took over from this run."""
        return self.tally.lost_leases


@dataclass
class _Account:
    """The pacing shared by calls to one provider account (base URL and key variable)."""

    slots: Slots
    bucket: TokenBucket | None
    download_gate: asyncio.Semaphore
    #: the ledger-held places, when the account's cap is shared by every process
    shared: SharedSlots | None = None


@dataclass
class _Manifest:
    """A manifest the loop has jobs of: its settings, its executor, and whether it is set aside."""

    record: ManifestRecord
    settings: RunSettings
    executor: JobExecutor | None = None
    set_aside: str | None = None
    #: its jobs this loop is executing now
    running: int = 0


class _Control:
    """What a manifest's executor may ask of the loop (`pipeline.executor.RunControl`)."""

    def __init__(self, runner: JobRunner, manifest: _Manifest) -> None:
        self._runner = runner
        self._manifest = manifest

    @property
    def stopping(self) -> bool:
        runner = self._runner
        return runner.stop_reason in _HALTING or self._manifest.set_aside in _HALTING_ASIDE

    def stop(self, reason: StopReason, message: str) -> None:
        self._runner.stop_for(self._manifest, reason, message)

    def call_ended(self) -> None:
        self._runner.call_ended()


class JobRunner:
    """Executes due jobs of one manifest, or of every manifest, until none is left (or told to stop)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        owner: str,
        run_id: int | None,
        session: aiohttp.ClientSession,
        shutdown: Shutdown,
        progress: Progress,
        manifest: ManifestRecord | None = None,
        settings: RunSettings | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        max_jobs: int | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        planning: asyncio.Task[Any] | None = None,
    ) -> None:
        """``manifest`` (with its ``settings`` and ``api_key``): serve that one; None: every one.

        ``planning``: the rest of the manifest's plan, being written meanwhile:
        the run does not end before it does, and stops if it fails.
        """
        self.ledger = ledger
        self.owner = owner
        self.session = session
        self.shutdown = shutdown
        self.progress = progress
        self.max_jobs = max_jobs
        self.lease_s = lease_s
        self.base_url = base_url
        self.only = manifest.id if manifest is not None else None
        self.batcher = WriteBatcher(ledger, owner, run_id, lease_s=lease_s)
        self.result = RunResult(progress.tally)
        self._manifests: dict[int, _Manifest] = {}
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._keys: dict[int, str] = {}
        if manifest is not None:
            assert settings is not None
            assert api_key is not None
            self._manifests[manifest.id] = _Manifest(manifest, settings)
            self._keys[manifest.id] = api_key
        self._tasks: set[asyncio.Task[None]] = set()
        #: the jobs this process's tasks work on, and those of them a claim gave back meanwhile
        self._executing: set[int] = set()
        self._claimed_again: set[int] = set()
        self._poll_s = POLL_S
        #: when a call last got an answer other than a 429 (a run of nothing else gives up)
        self._last_answer = time.monotonic()
        self._calling = 0
        self._wake = asyncio.Event()
        self.stop_reason: StopReason | None = None
        self._planning = planning
        if planning is not None:
            planning.add_done_callback(self._planned)

    # --- the loop --------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Work until nothing is due, the budget is reached, or a stop is asked for."""
        started = time.monotonic()
        ready = True
        for manifest in list(self._manifests.values()):
            ready = await self._prepare(manifest) and ready
        if ready:
            await self._work()
        self.result.stop_reason = self.stop_reason
        self.result.duration_s = time.monotonic() - started
        self.result.peak_images_in_flight = max(
            (account.slots.peak for account in self._accounts.values()), default=0
        )
        self.result.set_aside = {
            m.record.id: m.set_aside for m in self._manifests.values() if m.set_aside is not None
        }
        return self.result

    async def _work(self) -> None:
        # what exists now (modules, settings, the plan) lives for the whole run: the cyclic
        # collector leaves it alone from here, instead of walking it again in each full
        # collection while jobs run (half of the collector's time in a run of small jobs)
        gc.freeze()
        try:
            await self._work_frozen()
        finally:
            gc.unfreeze()

    async def _work_frozen(self) -> None:
        writer = asyncio.create_task(self.batcher.run(), name="ledger-writer")
        side = [
            asyncio.create_task(self._renew_leases(), name="lease-renewal"),
            asyncio.create_task(self._reclaim_expired(), name="lease-reclaim"),
        ]
        for task in (writer, *side):
            task.add_done_callback(self._side_task_done)
        self.shutdown.on_cancel(self._cancel_jobs)
        self.shutdown.on_cancel(self.ledger.stop_waiting)
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            for account in self._accounts.values():
                if account.shared is not None:
                    await account.shared.close()
            await self.batcher.close()
            try:
                await writer
            except LedgerError:
                pass  # already reported by `_side_task_done`, and the stop reason says so
            finally:
                try:
                    await self.ledger.release_jobs(self.owner, None)
                except LedgerError as exc:
                    # the jobs stay leased to this run; the next run on this host takes them back
                    # at once (its pid is dead), any other when their lease expires
                    log.warning("could not give this run's jobs back: %s", exc)

    def _side_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, LedgerError):
            # calls in flight go on: their paid answers are kept on disk
            self.stop(StopReason.LEDGER, str(error))
        elif error is not None:
            log.error("%s stopped: %s", task.get_name(), error)
            self.result.errors.append(f"{task.get_name()}: {error}")
            self.stop(StopReason.FATAL, f"{task.get_name()} failed: {error}")
            self._cancel_jobs()

    def stop(self, reason: StopReason, message: str | None = None) -> None:
        """Stop the whole run: claim nothing more (the first reason given is kept)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.result.message = message
        self._wake.set()

    def stop_for(self, manifest: _Manifest, reason: StopReason, message: str) -> None:
        """A job of ``manifest`` says the run must stop; a worker sets just that manifest aside."""
        if self.only is None and reason in _MANIFEST_STOPS:
            if manifest.set_aside is None:
                manifest.set_aside = reason.value
                log.warning("%s: set aside: %s", manifest.record.name, message)
            self._wake.set()
            return
        self.stop(reason, message)

    def call_ended(self) -> None:
        """A job's call is over: there may be room to claim more."""
        self._calling -= 1
        self._wake.set()

    @property
    def _capacity(self) -> int:
        """Images in flight the accounts allow together (before the first claim: the default)."""
        ceilings = [account.slots.ceiling for account in self._accounts.values()]
        if not ceilings:
            ceilings = [m.settings.limits.concurrency for m in self._manifests.values()] or [8]
        return max(1, sum(ceilings))

    @property
    def _downloading(self) -> int:
        return sum(m.executor.downloading for m in self._manifests.values() if m.executor is not None)

    async def _claim_loop(self) -> None:
        try:
            await self._claim_until_stopped()
        except LedgerError as exc:
            self.stop(StopReason.LEDGER, str(exc))

    async def _claim_until_stopped(self) -> None:
        stop_waiter = asyncio.create_task(self.shutdown.stop.wait(), name="stop-signal")
        try:
            while True:
                if self.shutdown.requested:
                    self.stop(StopReason.INTERRUPTED, f"stopped by {self.shutdown.signal_name}")
                if self.stop_reason is not None:
                    return
                limit = self._capacity
                room = 2 * limit - self._calling
                if self.max_jobs is not None:
                    room = min(room, self.max_jobs - self.result.claimed)
                    if room <= 0 and self._calling == 0:
                        self.stop(StopReason.MAX_JOBS, f"claimed the {self.max_jobs} job(s) asked for")
                        continue
                if self._downloading > 4 * limit:
                    room = 0
                if room > 0 and (room >= max(1, limit // 2) or self._calling == 0):
                    claim = await self.ledger.claim_jobs(
                        self.only, self.owner, room, self.lease_s, skip=self._skipped()
                    )
                    for job in claim.jobs:
                        await self._spawn(job)
                    if claim.jobs:
                        continue
                    if claim.budget_blocked:
                        if await self._budget_reached(claim.blocked_manifests):
                            continue
                    elif not self._tasks and not self._planning_on and await self._nothing_left():
                        return
                await self._wait(stop_waiter)
        finally:
            stop_waiter.cancel()

    def _planned(self, task: asyncio.Task[Any]) -> None:
        """The plan beside the run is written (its jobs may be claimed), or it failed (stop)."""
        error = None if task.cancelled() else task.exception()
        if isinstance(error, LedgerError):
            self.stop(StopReason.LEDGER, str(error))
        elif error is not None:
            self.stop(StopReason.FATAL, f"planning failed: {error}")
        self._wake.set()

    @property
    def _planning_on(self) -> bool:
        return self._planning is not None and not self._planning.done()

    def _skipped(self) -> list[int]:
        return [m.record.id for m in self._manifests.values() if m.set_aside is not None]

    async def _wait(self, stop_waiter: asyncio.Task[bool]) -> None:
        self._wake.clear()
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait(
                {waker, stop_waiter}, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waker.cancel()

    async def _nothing_left(self) -> bool:
        """True when no job this loop serves is pending or running anywhere."""
        pending, running, due = await self.ledger.pending_work(self.only, skip=self._skipped())
        # the last jobs run elsewhere: look again soon, to end with them
        self._poll_s = ENDING_POLL_S if running and not pending else POLL_S
        if pending == 0 and running == 0:
            return True
        if running and not pending:
            if not self._tasks:
                # nothing of ours is in flight, so a job still leased to us is an orphan: a claim
                # whose commit went through while its answer was lost with the connection (the
                # verb ran again and claimed others); give it back rather than renew it forever
                await self.ledger.release_jobs(self.owner, None)
            await self.ledger.reclaim_expired()
        if pending and due is not None and due > time.time():
            self.progress.note_waiting(due - time.time())
        return False

    async def _budget_reached(self, manifest_ids: Sequence[int]) -> bool:
        """Manifests whose next job would pass their budget: the run stops, a worker sets them aside.

        True when the run stopped.
        """
        for manifest_id in manifest_ids:
            record = await self.ledger.get_manifest_by_id(manifest_id)
            budget = to_usd(record.budget_micros or 0)
            message = (
                f"budget reached: ${to_usd(record.spent_micros):.2f} spent of ${budget:.2f}; "
                "the next job would cost more than what is left"
            )
            manifest = self._manifests.get(manifest_id)
            if self.only is None and manifest is not None:
                # a job in flight may still give its reservation back: wait for it first
                if not manifest.running:
                    self.stop_for(manifest, StopReason.BUDGET, message)
            elif self.only is None:
                self._manifests[manifest_id] = _Manifest(
                    record, RunSettings.from_config(record.config), set_aside=StopReason.BUDGET.value
                )
                log.warning("%s: set aside: %s", record.name, message)
            elif not self._tasks:
                self.stop(StopReason.BUDGET, message)
        return self.stop_reason is not None

    async def _spawn(self, job: ClaimedJob) -> None:
        if job.id in self._executing:
            # its lease ran out while this process still worked on it (a stalled event loop) and
            # this claim gave it back: the task that has it goes on, and nothing is sent twice
            self._claimed_again.add(job.id)
            return
        manifest = await self._manifest_of(job)
        executor = manifest.executor
        if executor is None:
            # set aside (no key, or its output folder cannot be used): give the job back untouched
            await self.ledger.release_jobs(self.owner, [job.id])
            return
        self.result.claimed += 1
        self.progress.job_claimed(job.key)
        self._calling += 1
        manifest.running += 1
        self._executing.add(job.id)
        task = asyncio.create_task(self._execute(manifest, executor, job), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._job_done)

    async def _execute(self, manifest: _Manifest, executor: JobExecutor, job: ClaimedJob) -> None:
        try:
            end: JobEnd = await executor.execute(job)
        finally:
            self._executing.discard(job.id)
            manifest.running -= 1
        if job.id in self._claimed_again:
            self._claimed_again.discard(job.id)
            if end.lease_lost:
                # the task gave up on the job it was claimed again for: back to pending, for a
                # claim that runs it (a job it finished, or settled, is no longer ours: no-op)
                with contextlib.suppress(LedgerError):
                    await self.ledger.release_jobs(self.owner, [job.id])
        self.result.tally.add(end)
        if end.retried and end.retry_reason is not None:
            self.progress.job_retrying(job.key, end.retry_reason, end.retry_in_s)
        self._watch_rate_limits(manifest, end)
        if end.children:
            self.progress.add_total(end.children)
        self.progress.update()

    def _watch_rate_limits(self, manifest: _Manifest, end: JobEnd) -> None:
        """Stop a run that has had nothing but 429s for `retry.give_up_after`."""
        now = time.monotonic()
        if not end.rate_limited:
            self._last_answer = now
            return
        limit = manifest.settings.retry.give_up_after
        if now - self._last_answer > limit:
            self.stop_for(
                manifest,
                StopReason.FATAL,
                f"for {human_duration(limit)} the provider answered nothing but 429 (too many in flight): "
                "is another client using this account's cap? (retry.give_up_after)",
            )

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _cancel_jobs(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # --- manifests and their executors -------------------------------------------------

    async def _manifest_of(self, job: ClaimedJob) -> _Manifest:
        manifest = self._manifests.get(job.manifest_id)
        if manifest is None:
            record = await self.ledger.get_manifest_by_id(job.manifest_id)
            settings = RunSettings.from_config(record.config)
            if self.base_url is not None:
                settings = settings.with_overrides(base_url=self.base_url)
            manifest = self._manifests[job.manifest_id] = _Manifest(record, settings)
            try:
                self._keys[record.id] = settings.api_key()
            except UsageError as exc:
                manifest.set_aside = "no key"
                log.error("%s", exc)
                return manifest
            await self._prepare(manifest)
        return manifest

    async def _prepare(self, manifest: _Manifest) -> bool:
        """Make the manifest's executor (its output folder first); False if it cannot be used."""
        settings = manifest.settings
        output = Path(settings.output_dir)
        try:
            removed = await asyncio.to_thread(_prepare_output, output)
        except OutputUnusable as exc:
            # found before anything is claimed or paid for
            message = f"{exc}; choose another output folder (--out) or fix this one"
            self.stop_for(manifest, StopReason.OUTPUT, message)
            return False
        if removed:
            log.info("removed %d temporary file(s) left by a stopped run", removed)
        account = await self._account(settings)
        redirects = RedirectPolicy.for_base_url(settings.provider.url)
        download_s = settings.timeouts.download
        api_key = self._keys[manifest.record.id]
        manifest.executor = JobExecutor(
            settings,
            client=IdeogramClient(
                self.session, settings.provider, api_key, redirects=redirects, source_deadline_s=download_s
            ),
            downloader=Downloader(self.session, output, redirects=redirects, deadline_s=download_s),
            writes=self.batcher,
            reads=self.ledger,
            policy=RetryPolicy(settings.retry.attempts, settings.retry.initial, settings.retry.max),
            slots=account.slots,
            bucket=account.bucket,
            download_gate=account.download_gate,
            control=_Control(self, manifest),
        )
        return True

    async def _account(self, settings: RunSettings) -> _Account:
        """The pacing of the settings' provider account (made on first use, with its limits).

        With ``limits.scope: account`` (the default) its places are held in
        the ledger, shared with every process that calls the same account.
        """
        key = (account_url(settings.provider.url), settings.provider.key_env)
        account = self._accounts.get(key)
        if account is None:
            limits = settings.limits
            bucket = TokenBucket(limits.requests_per_minute) if limits.requests_per_minute else None
            gate = asyncio.Semaphore(max(4, limits.concurrency))
            if limits.scope == "account":
                account_id = await self.ledger.account_id(*key, limits.concurrency)
                shared = SharedSlots(
                    self.ledger, account_id, self.owner, limits.concurrency, lease_s=self.lease_s
                )
                await shared.start()
                account = _Account(shared, bucket, gate, shared)
            else:
                account = _Account(ImageSlots(limits.concurrency), bucket, gate)
            self._accounts[key] = account
        return account

    # --- side tasks -----------------------------------------------------------------------

    async def _take_back_kept(self) -> None:
        """Record the answers dead runs kept on disk, for the manifests this loop serves."""
        from pipeline.running import take_back_kept_answers  # running imports this module

        for manifest in list(self._manifests.values()):
            await take_back_kept_answers(self.ledger, manifest.record, manifest.settings)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.ledger.renew_leases(self.owner, self.lease_s)

    async def _reclaim_expired(self) -> None:
        while True:
            await asyncio.sleep(min(self.lease_s / 2, 5.0))
            # answers a dead run kept on disk first, or its jobs would be paid for again
            reclaimed = await reclaim_dead_on_this_host(self.ledger, self._take_back_kept)
            reclaimed += await self.ledger.reclaim_expired()
            if reclaimed:
                log.info("reclaimed %d job(s) whose worker stopped renewing its lease", reclaimed)
                self._wake.set()


def _prepare_output(folder: Path) -> int:
    """Create the output folder (`OutputUnusable` if refused); remove dead runs' temporary files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputUnusable(str(folder), exc.strerror or str(exc)) from exc
    try:
        return clean_temp_files(folder)
    except OSError as exc:
        log.warning("could not look for temporary files in %s: %s", folder, exc)
        return 0
