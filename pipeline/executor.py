"""Executing one job: the call, its outcome, the downloads, the children (SPEC §6).

A `JobExecutor` is built with its collaborators — the client, the downloader,
the ledger's writes and reads, the retry policy, the pacing of calls, and the
run it serves — so that it can be tested on its own with fakes of each. The
worker loop (`pipeline.worker`) claims jobs and hands each to the executor
of its manifest; the executor returns a `JobEnd` for the run's tally and
tells the run to stop when a job shows it must (a rejected key, a ledger or
an output folder that cannot be used).

A job's life: attempt recorded as sent → call → (retry later | fail | paid
answer recorded) → images downloaded → completed with its children.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from pipeline import endpoints
from pipeline.client import Source
from pipeline.downloads import SavedImage
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
from pipeline.expand import ParentResult, expand_children, find_stage
from pipeline.jobs import PlannedJob, StopReason
from pipeline.ledger.records import ClaimedJob, Completion, Outcome, Response, StoredImage, to_micros
from pipeline.naming import NameFields, UnsafePath, render_name, slugify, unique_template
from pipeline.pacing import Slots, TokenBucket
from pipeline.pricing import PriceTable
from pipeline.recovery import KeptAnswer, keep_answer, recovery_dirs
from pipeline.results import (
    IMAGE_DOWNLOADED,
    IMAGE_EXPIRED,
    IMAGE_FAILED,
    IMAGE_WITHHELD,
    ApiResult,
    DownloadOutcome,
    GeneratedImage,
    JobEnd,
)
from pipeline.retrying import RetryPolicy
from pipeline.settings import RunSettings
from pipeline.storable import storable
from pipeline.structured import summary_of

log = logging.getLogger("ideobatch")


class Caller(Protocol):
    """Makes API calls (`pipeline.client.IdeogramClient`)."""

    async def call(
        self, op: str, request: dict[str, object], files: Sequence[tuple[str, Source]], on_send: OnSend
    ) -> ApiResult:
        """One call's parsed result, or an `ApiError`."""
        ...


class OnSend(Protocol):
    """Runs just before a request leaves."""

    async def __call__(self) -> None:
        """Record the attempt as sent."""
        ...


class Fetcher(Protocol):
    """Downloads produced images (`pipeline.downloads.Downloader`)."""

    async def fetch(self, url: str, final_without_ext: Path, *, rgba: bool = False) -> SavedImage:
        """The image at ``url`` saved under ``final_without_ext`` + its extension (``rgba``: must be RGBA)."""
        ...


class Writes(Protocol):
    """The ledger writes a job makes (`pipeline.ledger.batcher.WriteBatcher`)."""

    async def attempt_sent(self, job_id: int) -> int:
        """Record that a request is being sent; the attempt's id."""
        ...

    async def response(self, response: Response) -> int | None:
        """Record a paid answer before its images are downloaded (a number: as an extra answer)."""
        ...

    async def extra_downloads(self, job_id: int, downloads: Sequence[DownloadOutcome]) -> None:
        """Record the downloads of an extra answer's images."""
        ...

    async def complete(self, completion: Completion) -> None:
        """Finish a job."""
        ...

    async def settle(self, outcome: Outcome, *, final: bool) -> None:
        """Reschedule or fail a job after an unsuccessful attempt."""
        ...


class Reads(Protocol):
    """The ledger reads of a job resumed after its answer was recorded."""

    async def images_of(self, job_id: int) -> list[StoredImage]:
        """The recorded images of a job."""
        ...

    async def descriptions_of(self, job_id: int) -> list[str]:
        """The recorded descriptions of a job."""
        ...


class RunControl(Protocol):
    """What the executor may ask of the run it serves."""

    @property
    def stopping(self) -> bool:
        """A stop was asked that must keep jobs not yet sent from being sent."""
        ...

    def stop(self, reason: StopReason, message: str) -> None:
        """Stop the run (claims no more jobs)."""
        ...

    def call_ended(self) -> None:
        """A job's call is over (its downloads may go on): the run may claim more."""
        ...


class JobExecutor:
    """Runs the jobs of one manifest, one `execute` at a time per job."""

    def __init__(
        self,
        settings: RunSettings,
        *,
        client: Caller,
        downloader: Fetcher,
        writes: Writes,
        reads: Reads,
        policy: RetryPolicy,
        slots: Slots,
        bucket: TokenBucket | None,
        download_gate: asyncio.Semaphore,
        control: RunControl,
    ) -> None:
        self.settings = settings
        self.client = client
        self.downloader = downloader
        self.writes = writes
        self.reads = reads
        self.policy = policy
        self.slots = slots
        self.bucket = bucket
        self.download_gate = download_gate
        self.control = control
        self.prices: PriceTable = settings.price_table
        self.output_dir = Path(settings.output_dir)
        #: jobs of this executor downloading now (the loop slows its claims when many are)
        self.downloading = 0
        self._real_dirs: dict[Path, Path] = {}

    async def execute(self, job: ClaimedJob) -> JobEnd:
        """Execute ``job`` once; never raises but for cancellation."""
        end = JobEnd(job.id)
        calling = True
        try:
            if job.response_recorded:
                calling = self._call_ended(calling)
                await self._resume_downloads(job, end)
                return end
            answer = await self._call(job, end)
            calling = self._call_ended(calling)
            if answer is not None:
                await self._finish(job, answer[0], answer[1], end)
        except LeaseLost as exc:
            end.lease_lost = True
            log.warning("%s", exc)
        except LedgerError as exc:
            self.control.stop(StopReason.LEDGER, str(exc))
        except OutputUnusable as exc:
            # the job keeps its recorded answer and goes back to pending: a resume downloads again
            self.control.stop(StopReason.OUTPUT, f"{exc}; free or fix the output folder, then run again")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: stop the run rather than burn through the batch
            log.exception("job %s: unexpected error", job.key[:12])
            self.control.stop(StopReason.FATAL, storable(f"unexpected error: {type(exc).__name__}: {exc}"))
        finally:
            self._call_ended(calling)
        return end

    def _call_ended(self, calling: bool) -> bool:
        if calling:
            self.control.call_ended()
        return False

    # --- the call --------------------------------------------------------------------

    def files(self, job: ClaimedJob) -> list[tuple[str, Source]]:
        """The call's files: the main image under its part name, then the job's other inputs."""
        main = endpoints.endpoint(job.op).image
        files = [(main, Source(job.source, job.source_sha256))] if main and job.source else []
        files.extend((i.role, Source(i.location, i.sha256)) for i in job.inputs)
        return files

    async def _call(self, job: ClaimedJob, end: JobEnd) -> tuple[ApiResult, int | None] | None:
        images = endpoints.endpoint(job.op).images(job.request)
        attempt_id: int | None = None

        async def on_send() -> None:
            nonlocal attempt_id
            attempt_id = await self.writes.attempt_sent(job.id)

        await self.slots.acquire(images, job.id)
        try:
            try:
                if self.control.stopping:
                    await self.writes.settle(_untried(job), final=False)
                    return None
                if self.bucket is not None:
                    await self.bucket.take()
                result = await self.client.call(job.op, job.request, self.files(job), on_send)
            except TransientError as exc:
                if exc.inflight_limit:
                    # while its places are still held: the others in flight are what got through
                    self.slots.on_rate_limited(images)
                raise
            finally:
                # the call is over: its places go back before its outcome is written, so that
                # a burst of 429s sees only the calls still in flight
                self.slots.release(images, job.id)
        except FatalError as exc:
            self.control.stop(StopReason.FATAL, exc.message)
            await self.writes.settle(_outcome(job, attempt_id, exc, time.time()), final=False)
            return None
        except PermanentError as exc:
            end.failure = exc.reason
            await self.writes.settle(_outcome(job, attempt_id, exc), final=True)
            return None
        except TransientError as exc:
            await self._transient(job, attempt_id, exc, end)
            return None
        self.slots.on_success()
        return result, attempt_id

    async def _transient(
        self, job: ClaimedJob, attempt_id: int | None, exc: TransientError, end: JobEnd
    ) -> None:
        end.in_doubt = exc.in_doubt and attempt_id is not None
        if exc.status == 429:
            # refused before it ran, and not billed: it waits its turn again without using up
            # an attempt (`retry.give_up_after` bounds a run that gets nothing else)
            end.rate_limited = True
            delay: float | None = self.policy.wait_after(exc, job.attempts + 1)
            made = job.attempts
        else:
            made = job.attempts + (1 if attempt_id is not None else 0)
            delay = self.policy.next_delay(exc, max(1, made))
        if delay is None:
            end.failure = exc.reason
            message = f"gave up after {made} attempt(s): {exc.message}"
            final = Outcome(job.id, attempt_id, exc.reason, message, exc.status, None, exc.in_doubt)
            await self.writes.settle(final, final=True)
            return
        end.retried = True
        end.retry_in_s = delay
        end.retry_reason = str(exc.status) if exc.status else exc.reason
        outcome = _outcome(job, attempt_id, exc, time.time() + delay)
        if exc.status == 429:
            outcome = replace(outcome, counts=False)
        await self.writes.settle(outcome, final=False)

    # --- the answer --------------------------------------------------------------------

    def _cost(self, job: ClaimedJob, result: ApiResult) -> int:
        billed = len(result.images) if endpoints.endpoint(job.op).makes_images else 1
        return to_micros(self.prices.job_cost(job.op, job.model, billed))

    async def _finish(self, job: ClaimedJob, result: ApiResult, attempt_id: int | None, end: JobEnd) -> None:
        if result.sanitized:
            log.warning("job %s: %s", job.key[:12], result.sanitized_note)
        cost = self._cost(job, result)
        response = Response(job.id, attempt_id, result, cost)
        end.spend_micros = cost
        to_fetch = [image for image in result.images if not image.withheld]
        outcomes: list[DownloadOutcome] | None = None
        recorded = extra = False
        try:
            if to_fetch:
                # the paid answer is durable before the (slow, retryable) downloads start
                extra_from = await self.writes.response(response)
                recorded = True
                if extra := extra_from is not None:
                    await self._keep_extra(job, result, extra_from, end)
                    return
                outcomes = await self._download_all(job, result.images)
                await self._complete(job, outcomes, result.descriptions, None, end)
            else:
                outcomes = [DownloadOutcome(i.index, IMAGE_WITHHELD) for i in result.images]
                try:
                    await self._complete(job, outcomes, result.descriptions, response, end)
                except LeaseLost:
                    # its lease ran out while the call was in flight: the paid answer is kept all the same
                    extra_from = await self.writes.response(response)
                    recorded = True
                    if extra := extra_from is not None:
                        await self._keep_extra(job, result, extra_from, end)
                        return
                    await self._complete(job, outcomes, result.descriptions, None, end)
        except LedgerError:
            if extra:  # recorded: only its downloads are missing (the images stay pending in the ledger)
                raise
            if outcomes is None:
                # the image URLs expire, and downloading needs no ledger
                outcomes = await self._download_all(job, result.images)
            end.kept_answer = self._keep_answer(job, response, outcomes)
            raise
        except asyncio.CancelledError:
            # a second Ctrl-C while the paid answer waits for the ledger: keep it as it is (the
            # next run records it and downloads what is missing), never throw it away
            if not recorded:
                end.kept_answer = self._keep_answer(job, response, outcomes or ())
            raise

    async def _keep_extra(self, job: ClaimedJob, result: ApiResult, first: int, end: JobEnd) -> None:
        """Download an extra answer's images (numbered from ``first``); the job is another's to complete."""
        log.warning(
            "job %s: its lease passed to another worker while its call was in flight; the paid answer "
            "is kept as extra results of the job",
            job.key[:12],
        )
        images = [replace(image, index=image.index + first) for image in result.images]
        # numbered past the job's own: their file names carry their number
        outcomes = await self._download_all(job, images, total=first + len(images))
        await self.writes.extra_downloads(job.id, outcomes)
        end.lease_lost = True
        end.images = sum(1 for o in outcomes if o.state == IMAGE_DOWNLOADED)
        end.withheld = sum(1 for o in outcomes if o.state == IMAGE_WITHHELD)
        end.expired = sum(1 for o in outcomes if o.state == IMAGE_EXPIRED)

    def _keep_answer(
        self, job: ClaimedJob, response: Response, outcomes: Sequence[DownloadOutcome]
    ) -> str | None:
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
            path = keep_answer(recovery_dirs(self.settings.base_dir, self.output_dir), answer)
        except OutputUnusable as exc:
            # nowhere to keep it: the log is the last place (the next run will pay for it again)
            log.error("cannot keep the answer of job %s (%s): %s", job.key[:12], exc, answer.to_json())
            return None
        log.warning("the ledger is away: the answer of job %s is kept in %s", job.key[:12], path)
        return str(path)

    async def _resume_downloads(self, job: ClaimedJob, end: JobEnd) -> None:
        stored = await self.reads.images_of(job.id)
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
        descriptions = await self.reads.descriptions_of(job.id)
        await self._complete(job, outcomes, descriptions, None, end)

    async def _complete(
        self,
        job: ClaimedJob,
        outcomes: Sequence[DownloadOutcome],
        descriptions: Sequence[str],
        response: Response | None,
        end: JobEnd,
    ) -> None:
        expired = [o for o in outcomes if o.state == IMAGE_EXPIRED]
        failed = [o for o in outcomes if o.state == IMAGE_FAILED]
        kind = message = None
        if expired:
            kind, message = "url_expired", f"{len(expired)} image URL(s) expired before download"
        elif failed:
            kind, message = "download_failed", failed[0].error or "download failed"
        children = [] if kind else self._children(job, outcomes, descriptions)
        await self.writes.complete(Completion(job.id, outcomes, response, children, kind, message))
        end.images = sum(1 for o in outcomes if o.state == IMAGE_DOWNLOADED)
        end.withheld = sum(1 for o in outcomes if o.state == IMAGE_WITHHELD)
        end.expired = len(expired)
        end.failure = kind
        end.succeeded = kind is None
        end.children = len(children)

    def _children(
        self, job: ClaimedJob, outcomes: Sequence[DownloadOutcome], descriptions: Sequence[str]
    ) -> list[PlannedJob]:
        spec = find_stage(self.settings.jobs, job.stage)
        if spec is None or not spec.then:  # (a stage taken out of the manifest makes none)
            return []
        if not endpoints.endpoint(job.op).makes_images:
            results = [ParentResult(i, description=text) for i, text in enumerate(descriptions)]
        else:
            results = [
                ParentResult(o.index, image_path=o.path, image_sha256=o.sha256)
                for o in outcomes
                if o.state == IMAGE_DOWNLOADED
            ]
        return list(
            expand_children(
                job.as_planned(),
                spec,
                results,
                self.settings.defaults,
                self.prices,
                base_dir=self.settings.base_dir,
            )
        )

    # --- downloads -------------------------------------------------------------------

    async def _download_all(
        self, job: ClaimedJob, images: Sequence[GeneratedImage], total: int | None = None
    ) -> list[DownloadOutcome]:
        """Download ``images`` (of a response of ``total`` images, all of them by default)."""
        count = len(images) if total is None else total
        template = unique_template(self.settings.name_template, multi_image=count > 1)
        self.downloading += 1
        try:
            if len(images) == 1:  # the common case, without a task per image
                return [await self._download(job, images[0], template)]
            return list(await asyncio.gather(*(self._download(job, image, template) for image in images)))
        finally:
            self.downloading -= 1

    async def _download(self, job: ClaimedJob, image: GeneratedImage, template: str) -> DownloadOutcome:
        if image.withheld or image.url is None:
            return DownloadOutcome(image.index, IMAGE_WITHHELD)
        # a JSON prompt's description names its images as a prompt does
        written = job.prompt or summary_of(endpoints.endpoint(job.op), job.request)
        fields = NameFields(
            op=job.op,
            slug=slugify(written or _stem(job.source)),
            key=job.key,
            index=image.index,
            ext="png",
            seed=image.seed,
            id=job.source_id,
            model=job.model,
        )
        url = image.url
        rgba = endpoints.endpoint(job.op).transparent
        try:
            target = render_name(template, fields, self.output_dir, self._real_dirs).with_suffix("")
            async with self.download_gate:
                saved = await self.policy.download(lambda: self.downloader.fetch(url, target, rgba=rgba))
        except UnsafePath as exc:
            return DownloadOutcome(image.index, IMAGE_FAILED, error=storable(f"unsafe output path: {exc}"))
        except UrlExpired as exc:
            return DownloadOutcome(image.index, IMAGE_EXPIRED, error=storable(str(exc)))
        except (BadImage, DownloadRetryable) as exc:
            return DownloadOutcome(image.index, IMAGE_FAILED, error=storable(str(exc)))
        return DownloadOutcome(
            image.index,
            IMAGE_DOWNLOADED,
            str(saved.path),
            saved.sha256,
            saved.bytes,
            saved.width,
            saved.height,
        )


def _untried(job: ClaimedJob) -> Outcome:
    return Outcome(job.id, None, "aborted", "the run stopped before this job was sent", None, time.time())


def _outcome(
    job: ClaimedJob,
    attempt_id: int | None,
    exc: FatalError | PermanentError | TransientError,
    at: float | None = None,
) -> Outcome:
    return Outcome(job.id, attempt_id, exc.reason, exc.message, exc.status, at, exc.in_doubt)


def _stem(source: str | None) -> str | None:
    if not source:
        return None
    tail = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail.rsplit(".", 1)[0] if "." in tail else tail
