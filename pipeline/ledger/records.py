"""Rows the ledger hands out and the write-backs it takes, as plain dataclasses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline.jobs import InputFile, PlannedJob
from pipeline.results import ApiResult, DownloadOutcome

MICROS_PER_USD = 1_000_000


def to_micros(usd: Decimal | float) -> int:
    """USD as integer micro-dollars (rounded half up)."""
    return int((Decimal(str(usd)) * MICROS_PER_USD).to_integral_value(rounding="ROUND_HALF_UP"))


def to_usd(micros: int) -> float:
    """Micro-dollars as USD."""
    return micros / MICROS_PER_USD


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """A planned manifest: identity, stored settings, and money."""

    id: int
    name: str
    sha256: str
    base_dir: str
    config: dict[str, Any]
    budget_micros: int | None
    spent_micros: int
    reserved_micros: int
    plan_complete: bool = False
    #: the number of the latest plan begun (`Ledger.save_manifest`)
    plan_seq: int = 0

    @property
    def plan_fingerprint(self) -> str | None:
        """The fingerprint of the inputs the stored plan came from (see `pipeline.fingerprint`)."""
        value = self.config.get("plan_fingerprint")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job leased to this worker, with everything needed to execute it."""

    id: int
    manifest_id: int
    key: str
    op: str
    stage: str
    rank: int
    replica: int
    request: dict[str, Any]
    model: str | None
    num_images: int
    source: str | None
    source_sha256: str | None
    source_id: str | None
    parent_id: int | None
    attempts: int
    estimate_micros: int
    response_recorded: bool
    #: files besides the main image (mask, references)
    inputs: tuple[InputFile, ...] = ()

    @property
    def prompt(self) -> str | None:
        """The prompt sent, if any."""
        value = self.request.get("prompt")
        return value if isinstance(value, str) else None

    def as_planned(self) -> PlannedJob:
        """This job as a `PlannedJob` (for deriving its chained children)."""
        return PlannedJob(
            key=self.key,
            op=self.op,
            request=self.request,
            stage=self.stage,
            rank=self.rank,
            replica=self.replica,
            model=self.model,
            num_images=self.num_images,
            cost_usd=Decimal(self.estimate_micros) / MICROS_PER_USD,
            source=self.source,
            source_sha256=self.source_sha256,
            source_id=self.source_id,
            inputs=self.inputs,
        )


def claimed_from_row(row: Any) -> ClaimedJob:
    """A `ClaimedJob` from a row of the ledger's ``CLAIM_COLUMNS``, in their order.

    Unpacked by position: a claim turns thousands of rows a second into jobs,
    and attribute access on a row costs three times as much.
    """
    (
        job_id,
        manifest_id,
        key,
        op,
        stage,
        rank,
        replica,
        request,
        model,
        num_images,
        source,
        source_sha256,
        source_id,
        parent_id,
        attempts,
        estimate_micros,
        response_at,
        inputs,
    ) = row
    return ClaimedJob(
        id=job_id,
        manifest_id=manifest_id,
        key=key,
        op=op,
        stage=stage,
        rank=rank,
        replica=replica,
        request=json.loads(request),
        model=model,
        num_images=num_images,
        source=source,
        source_sha256=source_sha256,
        source_id=source_id,
        parent_id=parent_id,
        attempts=attempts,
        estimate_micros=estimate_micros,
        response_recorded=response_at is not None,
        inputs=tuple(InputFile.from_json(i) for i in json.loads(inputs)) if inputs else (),
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim got: jobs, and the manifests whose budget held back a due job."""

    jobs: list[ClaimedJob]
    blocked_manifests: tuple[int, ...] = ()

    @property
    def budget_blocked(self) -> bool:
        """Whether a budget held back a due job."""
        return bool(self.blocked_manifests)


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image row: what the API said and what became of the download."""

    job_id: int
    index: int
    remote_url: str | None
    prompt: str | None
    resolution: str | None
    seed: int | None
    is_image_safe: bool
    state: str
    local_path: str | None
    sha256: str | None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A successful API answer to record: the paid result of an attempt."""

    job_id: int
    attempt_id: int | None
    result: ApiResult
    cost_micros: int
    http_status: int = 200


@dataclass(frozen=True, slots=True)
class Completion:
    """A job finished: its downloads (and its response, if not yet recorded) and children."""

    job_id: int
    downloads: Sequence[DownloadOutcome] = ()
    response: Response | None = None
    children: Sequence[PlannedJob] = ()
    #: a job can complete with a reason recorded (e.g. some image expired): it then fails
    failure_kind: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """An attempt that did not succeed: to reschedule (with `next_attempt_at`) or to fail."""

    job_id: int
    attempt_id: int | None
    error_kind: str
    message: str
    http_status: int | None = None
    next_attempt_at: float | None = None
    in_doubt: bool = False
    #: False for an attempt that was refused unbilled for the in-flight limit (429): it does not
    #: use up ``retry.attempts``
    counts: bool = True


@dataclass
class PlanCounts:
    """How a plan went: jobs written now, and jobs the ledger already had."""

    total: int = 0
    new: int = 0
    #: jobs of earlier plans that this one no longer has (`Ledger.withdraw_unplanned`)
    withdrawn: int = 0
    by_op_model: dict[tuple[str, str | None], int] = field(default_factory=dict)
    estimate_micros: int = 0

    def __add__(self, other: PlanCounts) -> PlanCounts:
        """The counts of two parts of one plan, together."""
        by_op_model = dict(self.by_op_model)
        for bucket, count in other.by_op_model.items():
            by_op_model[bucket] = by_op_model.get(bucket, 0) + count
        return PlanCounts(
            total=self.total + other.total,
            new=self.new + other.new,
            withdrawn=self.withdrawn + other.withdrawn,
            by_op_model=by_op_model,
            estimate_micros=self.estimate_micros + other.estimate_micros,
        )
