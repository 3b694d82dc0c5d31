"""The worker pool: claim jobs from the ledger, call the API, download, record (SPEC §6).

Shaped like procrastinate's worker: a claim loop gated by the images in
flight and racing the stop signal; one named task per job whose done-callback
wakes the loop; side tasks (lease renewal, reclaiming expired leases, the
ledger writer) whose death stops the run; and a two-stage shutdown. A job's
life: leased → attempt recorded as sent → call → (retry later | fail | paid
response recorded) → images downloaded → completed with its children.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from pipeline.api_schema import IMAGE_OPS
from pipeline.client import IdeogramClient, Source
from pipeline.downloads import Downloader, clean_temp_files
from pipeline.errors import (
    BadImage,
    DownloadRetryable,
    FatalError,
    LeaseLost,
    LedgerError,
    OutputUnusable,
    PermanentError,
    TransientError,
    UrlExpired,
)
from pipeline.expand import ParentResult, PlannedJob, expand_children, find_stage
from pipeline.leases import DEFAULT_LEASE_S, POLL_S, reclaim_dead_on_this_host
from pipeline.ledger.batcher import WriteBatcher
from pipeline.ledger.records import (
    ClaimedJob,
    Completion,
    ManifestRecord,
    Outcome,
    Response,
    to_micros,
    to_usd,
)
from pipeline.ledger.repository import Ledger
from pipeline.naming import NameFields, UnsafePath, render_name, slugify, unique_template
from pipeline.pacing import ImageSlots, TokenBucket
from pipeline.progress import Progress
from pipeline.recovery import KeptAnswer, keep_answer
from pipeline.redirects import RedirectPolicy
from pipeline.results import (
    IMAGE_DOWNLOADED,
    IMAGE_EXPIRED,
    IMAGE_FAILED,
    IMAGE_WITHHELD,
    ApiResult,
    DownloadOutcome,
    GeneratedImage,
    RunTally,
)
from pipeline.retrying import RetryPolicy
from pipeline.settings import RunSettings
from pipeline.signals import Shutdown

log = logging.getLogger("ideobatch")


@dataclass
class RunResult:
    """How executing a manifest's jobs ended."""

    tally: RunTally
    #: budget | fatal | interrupted | max_jobs | ledger (unusable) | output (folder unusable)
    stop_reason: str | None = None
    message: str | None = None
    duration_s: float = 0.0
    peak_images_in_flight: int = 0
    claimed: int = 0
    lost_leases: int = 0
    errors: list[str] = field(default_factory=list)
    #: paid answers the ledger could not take, kept on disk for the next run (`pipeline.recovery`)
    kept_answers: list[str] = field(default_factory=list)


class JobRunner:
    """Executes the pending jobs of one planned manifest until none is left (or told to stop)."""

    def __init__(
        self,
        ledger: Ledger,
        record: ManifestRecord,
        settings: RunSettings,
        *,
        owner: str,
        run_id: int | None,
        session: aiohttp.ClientSession,
        api_key: str,
        shutdown: Shutdown,
        progress: Progress,
        max_jobs: int | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.ledger = ledger
        self.record = record
        self.settings = settings
        self.owner = owner
        self.shutdown = shutdown
        self.progress = progress
        self.max_jobs = max_jobs
        self.lease_s = lease_s
        limits = settings.limits
        self.slots = ImageSlots(limits.concurrency)
        self.bucket = TokenBucket(limits.requests_per_minute) if limits.requests_per_minute else None
        self.download_gate = asyncio.Semaphore(max(4, limits.concurrency))
        self.batcher = WriteBatcher(ledger, owner, run_id)
        redirects = RedirectPolicy.for_base_url(settings.provider.url)
        download_s = settings.timeouts.download
        self.client = IdeogramClient(
            session, settings.provider, api_key, redirects=redirects, source_deadline_s=download_s
        )
        self.downloader = Downloader(
            session, Path(settings.output_dir), redirects=redirects, deadline_s=download_s
        )
        self.policy = RetryPolicy(settings.retry.attempts, settings.retry.initial, settings.retry.max)
        self.prices = settings.price_table
        self.output_dir = Path(settings.output_dir)
        self.result = RunResult(progress.tally)
        self._tasks: set[asyncio.Task[None]] = set()
        self._calling = 0
        self._downloading = 0
        self._wake = asyncio.Event()
        self._stop_reason: str | None = None
        self._real_dirs: dict[Path, Path] = {}

    # --- the loop --------------------------------------------------------------------

    async def run(self) -> RunResult:
        """Work until nothing is due, the budget is reached, or a stop is asked for."""
        started = time.monotonic()
        try:
            removed = await asyncio.to_thread(_prepare_output, self.output_dir)
        except OutputUnusable as exc:
            # found before anything is claimed or paid for
            self._stop("output", f"{exc}; choose another output folder (--out) or fix this one")
        else:
            if removed:
                log.info("removed %d temporary file(s) left by a stopped run", removed)
            await self._work()
        self.result.stop_reason = self._stop_reason
        self.result.duration_s = time.monotonic() - started
        self.result.peak_images_in_flight = self.slots.peak
        return self.result

    async def _work(self) -> None:
        writer = asyncio.create_task(self.batcher.run(), name="ledger-writer")
        side = [
            asyncio.create_task(self._renew_leases(), name="lease-renewal"),
            asyncio.create_task(self._reclaim_expired(), name="lease-reclaim"),
        ]
        for task in (writer, *side):
            task.add_done_callback(self._side_task_done)
        self.shutdown.on_cancel(self._cancel_jobs)
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
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
            # calls in flight go on: their paid answers are kept on disk (`_keep_answer`)
            self._stop("ledger", str(error))
        elif error is not None:
            log.error("%s stopped: %s", task.get_name(), error)
            self.result.errors.append(f"{task.get_name()}: {error}")
            self._stop("fatal", f"{task.get_name()} failed: {error}")
            self._cancel_jobs()

    def _stop(self, reason: str, message: str | None = None) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
            self.result.message = message
        self._wake.set()

    async def _claim_loop(self) -> None:
        try:
            await self._claim_until_stopped()
        except LedgerError as exc:
            self._stop("ledger", str(exc))

    async def _claim_until_stopped(self) -> None:
        limit = self.slots.ceiling
        stop_waiter = asyncio.create_task(self.shutdown.stop.wait(), name="stop-signal")
        try:
            while True:
                if self.shutdown.requested:
                    self._stop("interrupted", f"stopped by {self.shutdown.signal_name}")
                if self._stop_reason is not None:
                    return
                room = 2 * limit - self._calling
                if self.max_jobs is not None:
                    room = min(room, self.max_jobs - self.result.claimed)
                    if room <= 0 and self._calling == 0:
                        self._stop("max_jobs", f"claimed the {self.max_jobs} job(s) asked for")
                        continue
                if self._downloading > 4 * limit:
                    room = 0
                if room > 0 and (room >= max(1, limit // 2) or self._calling == 0):
                    claim = await self.ledger.claim_jobs(self.record.id, self.owner, room, self.lease_s)
                    for job in claim.jobs:
                        self._spawn(job)
                    if claim.jobs:
                        continue
                    if claim.budget_blocked:
                        if not self._tasks:
                            self._stop("budget", await self._budget_message())
                            continue
                    elif not self._tasks and await self._nothing_left():
                        return
                await self._wait(stop_waiter)
        finally:
            stop_waiter.cancel()

    async def _wait(self, stop_waiter: asyncio.Task[bool]) -> None:
        self._wake.clear()
        waker = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({waker, stop_waiter}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()

    async def _nothing_left(self) -> bool:
        """True when no job of this manifest is pending or running anywhere."""
        pending, running, due = await self.ledger.pending_work(self.record.id)
        if pending == 0 and running == 0:
            return True
        if running and not pending:
            await self.ledger.reclaim_expired()
        if pending and due is not None and due > time.time():
            self.progress.note_waiting(due - time.time())
        return False

    async def _budget_message(self) -> str:
        record = await self.ledger.get_manifest_by_id(self.record.id)
        budget = to_usd(record.budget_micros or 0)
        return (
            f"budget reached: ${to_usd(record.spent_micros):.2f} spent of ${budget:.2f}; "
            "the next job would cost more than what is left"
        )

    def _spawn(self, job: ClaimedJob) -> None:
        self.result.claimed += 1
        self.progress.job_claimed(job.key)
        self._calling += 1
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _cancel_jobs(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # --- side tasks -----------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            await self.ledger.renew_leases(self.owner, self.lease_s)

    async def _reclaim_expired(self) -> None:
        while True:
            await asyncio.sleep(min(self.lease_s / 2, 5.0))
            reclaimed = await reclaim_dead_on_this_host(self.ledger)
            reclaimed += await self.ledger.reclaim_expired()
            if reclaimed:
                log.info("reclaimed %d job(s) whose worker stopped renewing its lease", reclaimed)
                self._wake.set()

    # --- one job ----------------------------------------------------------------------------

    async def _execute(self, job: ClaimedJob) -> None:
        in_call = True
        try:
            if job.response_recorded:
                in_call = self._call_done(in_call)
                await self._resume_downloads(job)
                return
            outcome = await self._call(job)
            in_call = self._call_done(in_call)
            if outcome is not None:
                result, attempt_id = outcome
                await self._finish(job, result, attempt_id)
        except LeaseLost as exc:
            self.result.lost_leases += 1
            log.warning("%s", exc)
        except LedgerError as exc:
            self._stop("ledger", str(exc))
        except OutputUnusable as exc:
            # the job keeps its recorded answer and goes back to pending: a resume downloads again
            self._stop("output", f"{exc}; free or fix the output folder, then run again")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: stop the run rather than burn through the batch
            log.exception("job %s: unexpected error", job.key[:12])
            self.result.errors.append(f"job {job.key[:12]}: {type(exc).__name__}: {exc}")
            self._stop("fatal", f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self._call_done(in_call)
            self.progress.update()

    def _call_done(self, in_call: bool) -> bool:
        if in_call:
            self._calling -= 1
            self._wake.set()
        return False

    def _source(self, job: ClaimedJob) -> Source | None:
        return Source(job.source, job.source_sha256) if job.source else None

    async def _call(self, job: ClaimedJob) -> tuple[ApiResult, int | None] | None:
        images = job.num_images if job.op in IMAGE_OPS else 1
        attempt_id: int | None = None

        async def on_send() -> None:
            nonlocal attempt_id
            attempt_id = await self.batcher.attempt_sent(job.id)

        await self.slots.acquire(images)
        try:
            if self._stop_reason in ("fatal", "interrupted"):
                await self.batcher.settle(self._untried(job), final=False)
                return None
            if self.bucket is not None:
                await self.bucket.take()
            result = await self.client.call(job.op, job.request, self._source(job), on_send)
        except FatalError as exc:
            self._stop("fatal", exc.message)
            await self.batcher.settle(self._outcome(job, attempt_id, exc, time.time()), final=False)
            return None
        except PermanentError as exc:
            self._count_failure(exc.reason)
            await self.batcher.settle(self._outcome(job, attempt_id, exc), final=True)
            return None
        except TransientError as exc:
            await self._transient(job, attempt_id, exc)
            return None
        finally:
            self.slots.release(images)
        self.slots.on_success()
        return result, attempt_id

    def _untried(self, job: ClaimedJob) -> Outcome:
        return Outcome(job.id, None, "aborted", "the run stopped before this job was sent", None, time.time())

    def _outcome(
        self,
        job: ClaimedJob,
        attempt_id: int | None,
        exc: FatalError | PermanentError | TransientError,
        at: float | None = None,
    ) -> Outcome:
        return Outcome(job.id, attempt_id, exc.reason, exc.message, exc.status, at, exc.in_doubt)

    async def _transient(self, job: ClaimedJob, attempt_id: int | None, exc: TransientError) -> None:
        if exc.inflight_limit:
            self.slots.on_rate_limited()
        if exc.in_doubt and attempt_id is not None:
            self.result.tally.in_doubt += 1
        made = job.attempts + (1 if attempt_id is not None else 0)
        delay = self.policy.next_delay(exc, max(1, made))
        if delay is None:
            self._count_failure(exc.reason)
            final = Outcome(
                job.id,
                attempt_id,
                exc.reason,
                f"gave up after {made} attempt(s): {exc.message}",
                exc.status,
                None,
                exc.in_doubt,
            )
            await self.batcher.settle(final, final=True)
            return
        self.result.tally.retried += 1
        self.progress.job_retrying(job.key, exc, delay)
        await self.batcher.settle(self._outcome(job, attempt_id, exc, time.time() + delay), final=False)

    def _count_failure(self, reason: str) -> None:
        tally = self.result.tally
        tally.failed += 1
        tally.failures[reason] = tally.failures.get(reason, 0) + 1

    def _cost(self, job: ClaimedJob, result: ApiResult) -> int:
        billed = len(result.images) if job.op in IMAGE_OPS else 1
        return to_micros(self.prices.job_cost(job.op, job.model, billed))

    async def _finish(self, job: ClaimedJob, result: ApiResult, attempt_id: int | None) -> None:
        cost = self._cost(job, result)
        response = Response(job.id, attempt_id, result, cost)
        self.result.tally.spend_micros += cost
        to_fetch = [image for image in result.images if not image.withheld]
        outcomes: list[DownloadOutcome] | None = None
        try:
            if to_fetch:
                # the paid answer is durable before the (slow, retryable) downloads start
                await self.batcher.response(response)
                outcomes = await self._download_all(job, result.images)
                await self._complete(job, outcomes, result.descriptions, None)
            else:
                outcomes = [DownloadOutcome(i.index, IMAGE_WITHHELD) for i in result.images]
                await self._complete(job, outcomes, result.descriptions, response)
        except LedgerError:
            if outcomes is None:
                # the image URLs expire, and downloading needs no ledger
                outcomes = await self._download_all(job, result.images)
            self._keep_answer(job, response, outcomes)
            raise

    def _keep_answer(self, job: ClaimedJob, response: Response, outcomes: Sequence[DownloadOutcome]) -> None:
        """Write a paid answer the ledger would not take to the output folder, for the next run."""
        answer = KeptAnswer(
            self.settings.name,
            job.key,
            response.attempt_id,
            response.cost_micros,
            response.result,
            tuple(outcomes),
        )
        try:
            path = keep_answer(self.output_dir, answer)
        except OutputUnusable as exc:
            # nowhere to keep it: the log is the last place (the next run will pay for it again)
            log.error("cannot keep the answer of job %s (%s): %s", job.key[:12], exc, answer.to_json())
            return
        self.result.kept_answers.append(str(path))
        log.warning("the ledger is away: the answer of job %s is kept in %s", job.key[:12], path)

    async def _resume_downloads(self, job: ClaimedJob) -> None:
        stored = await self.ledger.images_of(job.id)
        done = {
            s.index: DownloadOutcome(
                s.index, IMAGE_DOWNLOADED, s.local_path, s.sha256, s.bytes, s.width, s.height
            )
            for s in stored
            if s.state == IMAGE_DOWNLOADED and s.local_path and Path(s.local_path).is_file()
        }
        images = [
            GeneratedImage(s.index, s.remote_url, s.prompt, s.resolution, s.seed, s.is_image_safe)
            for s in stored
            if s.index not in done
        ]
        fetched = await self._download_all(job, images, total=len(stored)) if images else []
        outcomes = sorted([*done.values(), *fetched], key=lambda o: o.index)
        await self._complete(job, outcomes, await self.ledger.descriptions_of(job.id), None)

    async def _complete(
        self,
        job: ClaimedJob,
        outcomes: Sequence[DownloadOutcome],
        descriptions: Sequence[str],
        response: Response | None,
    ) -> None:
        tally = self.result.tally
        expired = [o for o in outcomes if o.state == IMAGE_EXPIRED]
        failed = [o for o in outcomes if o.state == IMAGE_FAILED]
        kind = message = None
        if expired:
            kind, message = "url_expired", f"{len(expired)} image URL(s) expired before download"
        elif failed:
            kind, message = "download_failed", failed[0].error or "download failed"
        children = [] if kind else self._children(job, outcomes, descriptions)
        await self.batcher.complete(Completion(job.id, outcomes, response, children, kind, message))
        tally.images += sum(1 for o in outcomes if o.state == IMAGE_DOWNLOADED)
        tally.withheld += sum(1 for o in outcomes if o.state == IMAGE_WITHHELD)
        tally.expired += len(expired)
        if kind:
            self._count_failure(kind)
        else:
            tally.succeeded += 1
        if children:
            self.progress.add_total(len(children))

    def _children(
        self, job: ClaimedJob, outcomes: Sequence[DownloadOutcome], descriptions: Sequence[str]
    ) -> list[PlannedJob]:
        spec = find_stage(self.settings.jobs, job.stage)
        if not spec.then:
            return []
        if job.op == "describe":
            results = [ParentResult(i, description=text) for i, text in enumerate(descriptions)]
        else:
            results = [
                ParentResult(o.index, image_path=o.path, image_sha256=o.sha256)
                for o in outcomes
                if o.state == IMAGE_DOWNLOADED
            ]
        return list(expand_children(job.as_planned(), spec, results, self.settings.defaults, self.prices))

    async def _download_all(
        self, job: ClaimedJob, images: Sequence[GeneratedImage], total: int | None = None
    ) -> list[DownloadOutcome]:
        """Download ``images`` (of a response of ``total`` images, all of them by default)."""
        count = len(images) if total is None else total
        template = unique_template(self.settings.name_template, multi_image=count > 1)
        self._downloading += 1
        try:
            if len(images) == 1:  # the common case, without a task per image
                return [await self._download(job, images[0], template)]
            return list(await asyncio.gather(*(self._download(job, image, template) for image in images)))
        finally:
            self._downloading -= 1

    async def _download(self, job: ClaimedJob, image: GeneratedImage, template: str) -> DownloadOutcome:
        if image.withheld or image.url is None:
            return DownloadOutcome(image.index, IMAGE_WITHHELD)
        fields = NameFields(
            op=job.op,
            slug=slugify(job.prompt) if job.prompt else slugify(_stem(job.source)),
            key=job.key,
            index=image.index,
            ext="png",
            seed=image.seed,
            id=job.source_id,
            model=job.model,
        )
        url = image.url
        try:
            target = render_name(template, fields, self.output_dir, self._real_dirs).with_suffix("")
            async with self.download_gate:
                saved = await self.policy.download(lambda: self.downloader.fetch(url, target))
        except UnsafePath as exc:
            return DownloadOutcome(image.index, IMAGE_FAILED, error=f"unsafe output path: {exc}")
        except UrlExpired as exc:
            return DownloadOutcome(image.index, IMAGE_EXPIRED, error=str(exc))
        except (BadImage, DownloadRetryable) as exc:
            return DownloadOutcome(image.index, IMAGE_FAILED, error=str(exc))
        return DownloadOutcome(
            image.index,
            IMAGE_DOWNLOADED,
            str(saved.path),
            saved.sha256,
            saved.bytes,
            saved.width,
            saved.height,
        )


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


def _stem(source: str | None) -> str | None:
    if not source:
        return None
    tail = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail.rsplit(".", 1)[0] if "." in tail else tail
