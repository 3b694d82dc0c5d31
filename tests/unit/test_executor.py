"""The job executor on its own: built with fakes of its client, downloader, ledger and run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline import retrying
from pipeline.client import Source
from pipeline.downloads import SavedImage
from pipeline.errors import (
    BadImage,
    FatalError,
    LedgerUnavailable,
    PermanentError,
    TransientError,
)
from pipeline.executor import JobExecutor
from pipeline.jobs import InputFile, StopReason
from pipeline.ledger.records import ClaimedJob, Completion, Outcome, Response, StoredImage
from pipeline.pacing import ImageSlots
from pipeline.results import (
    IMAGE_DOWNLOADED,
    IMAGE_FAILED,
    IMAGE_WITHHELD,
    ApiResult,
    GeneratedImage,
)
from pipeline.retrying import RetryPolicy
from pipeline.settings import RunSettings

PRICE_MICROS = 80_000  # V_2, the default model


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    """Retry delays are computed, never slept on."""
    retrying.set_wait_scale(0.0)
    yield
    retrying.set_wait_scale(1.0)


class FakeClient:
    """Answers each call with the next of ``answers`` (a result, or an error to raise)."""

    def __init__(self, *answers: ApiResult | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, Any], list[tuple[str, Source]]]] = []

    async def call(
        self,
        op: str,
        request: dict[str, Any],
        files: Sequence[tuple[str, Source]],
        on_send: Callable[[], Awaitable[None]],
    ) -> ApiResult:
        self.calls.append((op, request, list(files)))
        await on_send()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeDownloader:
    """Writes a few bytes for each URL, or raises what ``failures`` says for it."""

    def __init__(self, failures: dict[str, Exception] | None = None) -> None:
        self.failures = failures or {}
        self.fetched: list[str] = []

    async def fetch(self, url: str, final_without_ext: Path, *, rgba: bool = False) -> SavedImage:
        self.fetched.append(url)
        if url in self.failures:
            raise self.failures[url]
        path = final_without_ext.with_name(final_without_ext.name + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return SavedImage(path, "ab" * 32, 3, 8, 6, "png")


class FakeLedger:
    """Records every write; ``refuse`` makes the writes of answers fail as a ledger that is away."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.attempts: list[int] = []
        self.responses: list[Response] = []
        self.completions: list[Completion] = []
        self.settled: list[tuple[Outcome, bool]] = []
        self.stored: list[StoredImage] = []

    async def attempt_sent(self, job_id: int) -> int:
        self.attempts.append(job_id)
        return 100 + len(self.attempts)

    async def response(self, response: Response) -> None:
        if self.refuse:
            raise LedgerUnavailable("the ledger did not answer")
        self.responses.append(response)

    async def complete(self, completion: Completion) -> None:
        if self.refuse:
            raise LedgerUnavailable("the ledger did not answer")
        self.completions.append(completion)

    async def settle(self, outcome: Outcome, *, final: bool) -> None:
        self.settled.append((outcome, final))

    async def images_of(self, job_id: int) -> list[StoredImage]:
        return self.stored

    async def descriptions_of(self, job_id: int) -> list[str]:
        return []


class FakeRun:
    """The run the executor serves: records stops and ended calls."""

    def __init__(self, stopping: bool = False) -> None:
        self.stopping = stopping
        self.stops: list[tuple[StopReason, str]] = []
        self.calls_ended = 0

    def stop(self, reason: StopReason, message: str) -> None:
        self.stops.append((reason, message))

    def call_ended(self) -> None:
        self.calls_ended += 1


def settings(tmp_path: Path, jobs: list[dict[str, Any]] | None = None) -> RunSettings:
    """Settings as planning stores them."""
    return RunSettings.from_config(
        {
            "name": "unit",
            "base_dir": str(tmp_path),
            "provider": {"kind": "crazyrouter", "base_url": "http://127.0.0.1:9"},
            "output": {"dir": str(tmp_path / "out"), "name": "{op}/{slug}-{key}-{index}.{ext}"},
            "limits": {},
            "retry": {"attempts": 3},
            "timeouts": {},
            "jobs": jobs or [{"op": "generate"}],
        }
    )


def job(**changes: Any) -> ClaimedJob:
    """A claimed generate job."""
    fields: dict[str, Any] = {
        "id": 7,
        "manifest_id": 1,
        "key": "k" * 64,
        "op": "generate",
        "stage": "0",
        "rank": 0,
        "replica": 0,
        "request": {"prompt": "a red fox"},
        "model": "V_2",
        "num_images": 1,
        "source": None,
        "source_sha256": None,
        "source_id": None,
        "parent_id": None,
        "attempts": 0,
        "estimate_micros": PRICE_MICROS,
        "response_recorded": False,
    }
    fields.update(changes)
    return ClaimedJob(**fields)


def image(index: int = 0, url: str | None = "https://img.test/a.png", safe: bool = True) -> GeneratedImage:
    """One image of an answer."""
    return GeneratedImage(index, url, "a red fox, detailed", "1024x1024", 42 + index, safe)


def executor(
    tmp_path: Path,
    client: FakeClient,
    ledger: FakeLedger,
    run: FakeRun,
    downloader: FakeDownloader | None = None,
    jobs: list[dict[str, Any]] | None = None,
) -> JobExecutor:
    """An executor wired to the fakes."""
    return JobExecutor(
        settings(tmp_path, jobs),
        client=client,
        downloader=downloader or FakeDownloader(),
        writes=ledger,
        reads=ledger,
        policy=RetryPolicy(3, 1.0, 60.0),
        slots=ImageSlots(4),
        bucket=None,
        download_gate=asyncio.Semaphore(4),
        control=run,
    )


async def test_a_paid_answer_is_recorded_then_downloaded_then_completed(tmp_path: Path) -> None:
    """Success: the answer is recorded before downloads; the job completes with its images."""
    ledger, run = FakeLedger(), FakeRun()
    client = FakeClient(ApiResult(images=(image(0), image(1, "https://img.test/b.png"))))
    end = await executor(tmp_path, client, ledger, run).execute(job(num_images=2))
    assert end.succeeded
    assert (end.images, end.spend_micros, end.failure) == (2, 2 * PRICE_MICROS, None)
    assert ledger.attempts == [7]
    assert [r.cost_micros for r in ledger.responses] == [2 * PRICE_MICROS]
    (completion,) = ledger.completions
    assert [o.state for o in completion.downloads] == [IMAGE_DOWNLOADED, IMAGE_DOWNLOADED]
    assert completion.response is None  # recorded already, before the downloads
    assert run.calls_ended == 1
    assert run.stops == []


async def test_a_rejected_key_stops_the_run_and_puts_the_job_back(tmp_path: Path) -> None:
    """FatalError: the run is told to stop at once; the job is rescheduled, not failed."""
    ledger, run = FakeLedger(), FakeRun()
    client = FakeClient(FatalError("HTTP 401: bad key", reason="auth", status=401))
    end = await executor(tmp_path, client, ledger, run).execute(job())
    assert run.stops == [(StopReason.FATAL, "HTTP 401: bad key")]
    ((outcome, final),) = ledger.settled
    assert (outcome.error_kind, final) == ("auth", False)
    assert not end.succeeded
    assert end.failure is None


async def test_a_permanent_error_fails_the_job(tmp_path: Path) -> None:
    """PermanentError (422 unsafe): the job fails for good with its reason; the run goes on."""
    ledger, run = FakeLedger(), FakeRun()
    client = FakeClient(PermanentError("HTTP 422: unsafe", reason="unsafe", status=422))
    end = await executor(tmp_path, client, ledger, run).execute(job())
    ((outcome, final),) = ledger.settled
    assert (outcome.error_kind, final) == ("unsafe", True)
    assert end.failure == "unsafe"
    assert run.stops == []


async def test_a_transient_error_is_retried_later_and_counted_in_doubt(tmp_path: Path) -> None:
    """TransientError: rescheduled (no slot held while waiting); a 5xx after sending is in doubt."""
    ledger, run = FakeLedger(), FakeRun()
    client = FakeClient(TransientError("HTTP 503", reason="http_503", status=503, in_doubt=True))
    end = await executor(tmp_path, client, ledger, run).execute(job())
    ((outcome, final),) = ledger.settled
    assert final is False
    assert outcome.next_attempt_at is not None
    assert (end.retried, end.in_doubt, end.retry_reason) == (True, True, "503")


async def test_the_last_attempt_of_a_transient_error_fails_the_job(tmp_path: Path) -> None:
    """After `retry.attempts`, a transient error fails the job, saying how many attempts were made."""
    ledger, run = FakeLedger(), FakeRun()
    client = FakeClient(TransientError("timeout", reason="timeout", in_doubt=True))
    end = await executor(tmp_path, client, ledger, run).execute(job(attempts=2))
    ((outcome, final),) = ledger.settled
    assert final is True
    assert outcome.message.startswith("gave up after 3 attempt(s)")
    assert end.failure == "timeout"


async def test_a_withheld_image_is_paid_and_completes_without_a_download(tmp_path: Path) -> None:
    """A withheld image: billed, recorded as withheld with the completion, nothing downloaded."""
    ledger, run = FakeLedger(), FakeRun()
    downloader = FakeDownloader()
    client = FakeClient(ApiResult(images=(image(url=None, safe=False),)))
    end = await executor(tmp_path, client, ledger, run, downloader).execute(job())
    (completion,) = ledger.completions
    assert completion.response is not None
    assert [o.state for o in completion.downloads] == [IMAGE_WITHHELD]
    assert downloader.fetched == []
    assert (end.succeeded, end.withheld, end.spend_micros) == (True, 1, PRICE_MICROS)


async def test_a_failed_download_fails_the_job_without_calling_again(tmp_path: Path) -> None:
    """A download that fails for good: the job fails `download_failed`, the API was called once."""
    ledger, run = FakeLedger(), FakeRun()
    url = "https://img.test/a.png"
    client = FakeClient(ApiResult(images=(image(url=url),)))
    downloader = FakeDownloader({url: BadImage("not a PNG")})
    end = await executor(tmp_path, client, ledger, run, downloader).execute(job())
    (completion,) = ledger.completions
    assert completion.failure_kind == "download_failed"
    assert [o.state for o in completion.downloads] == [IMAGE_FAILED]
    assert len(client.calls) == 1
    assert end.failure == "download_failed"


async def test_a_job_with_a_stage_plans_one_child_per_image(tmp_path: Path) -> None:
    """A `then:` stage: one child per downloaded image, in the completion's transaction."""
    ledger, run = FakeLedger(), FakeRun()
    stages = [{"op": "generate", "then": [{"op": "upscale"}]}]
    client = FakeClient(ApiResult(images=(image(0), image(1, "https://img.test/b.png"))))
    end = await executor(tmp_path, client, ledger, run, jobs=stages).execute(job(num_images=2))
    (completion,) = ledger.completions
    assert [child.op for child in completion.children] == ["upscale", "upscale"]
    assert all(child.source and child.source.endswith(".png") for child in completion.children)
    assert end.children == 2


async def test_an_answer_the_ledger_cannot_take_is_kept_on_disk(tmp_path: Path) -> None:
    """The ledger away: the answer's images are downloaded and the answer kept; the run stops (exit 5)."""
    ledger, run = FakeLedger(refuse=True), FakeRun()
    client = FakeClient(ApiResult(images=(image(0),)))
    end = await executor(tmp_path, client, ledger, run).execute(job())
    assert [reason for reason, _ in run.stops] == [StopReason.LEDGER]
    assert end.kept_answer is not None
    kept = json.loads(Path(end.kept_answer).read_text())
    # beside the manifest's ledger, where a run with another --out finds it too
    assert Path(end.kept_answer).parent == tmp_path / ".ideobatch" / "recovery"
    assert kept["job_key"] == "k" * 64
    assert [d["state"] for d in kept["downloads"]] == [IMAGE_DOWNLOADED]


async def test_a_stopping_run_sends_nothing_more(tmp_path: Path) -> None:
    """After a fatal stop, a job that was claimed but not sent is put back untried."""
    ledger, run = FakeLedger(), FakeRun(stopping=True)
    client = FakeClient()
    end = await executor(tmp_path, client, ledger, run).execute(job())
    assert client.calls == []
    ((outcome, final),) = ledger.settled
    assert (outcome.error_kind, outcome.attempt_id, final) == ("aborted", None, False)
    assert not end.succeeded


async def test_the_call_carries_the_main_image_and_the_other_inputs(tmp_path: Path) -> None:
    """The files of a call: the main image under its part name, then masks and references in order."""
    ledger, run = FakeLedger(), FakeRun()
    client = FakeClient(ApiResult(images=(image(0),)))
    inputs = (InputFile("mask", "/m.png", "1" * 64), InputFile("refs", "https://r.test/x.png"))
    await executor(tmp_path, client, ledger, run).execute(
        job(op="remix", source="/s.png", source_sha256="2" * 64, inputs=inputs)
    )
    ((_op, _request, files),) = client.calls
    assert files == [
        ("image_file", Source("/s.png", "2" * 64)),
        ("mask", Source("/m.png", "1" * 64)),
        ("refs", Source("https://r.test/x.png", None)),
    ]
