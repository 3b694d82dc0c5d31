"""The shared record of a unit of paid work, and the names of its states (a neutral module).

Imported by expansion (which makes `PlannedJob`s), the ledger (which stores
them) and the runner (which executes them), so that the storage layer never
imports the layer that reads manifests — as procrastinate keeps its `Job` in
``jobs.py`` between its worker and its manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    """Where a job is: ``pending`` → ``running`` (leased) → ``succeeded`` | ``failed``.

    ``withdrawn``: a job taken out of the manifest before it was paid for (a
    later complete plan no longer has it); it is never claimed, and a plan
    that has it again puts it back to ``pending`` (`pipeline.ledger.withdrawals`).
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    WITHDRAWN = "withdrawn"


class StopReason(StrEnum):
    """Why a run stopped before every job was done."""

    #: the next job would pass the budget
    BUDGET = "budget"
    #: the key was rejected, the account is empty, the endpoint is wrong, or a bug
    FATAL = "fatal"
    #: a signal asked it to
    INTERRUPTED = "interrupted"
    #: ``--max-jobs`` were claimed
    MAX_JOBS = "max_jobs"
    #: the ledger cannot be used (exit 5)
    LEDGER = "ledger"
    #: the output folder cannot be used (exit 5)
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class InputFile:
    """A file a job sends besides its main image: a mask, a style or character reference.

    ``role`` is the request's part name (``mask``, ``style_reference_images``);
    ``location`` a URL or an absolute path; ``sha256`` the bytes' hash for a
    path (its identity in the job key), None for a URL (the URL is).
    """

    role: str
    location: str
    sha256: str | None = None

    @property
    def identity(self) -> str:
        """What makes this input the same input: the bytes' hash, or the URL."""
        return f"sha256:{self.sha256}" if self.sha256 else self.location

    def as_json(self) -> dict[str, Any]:
        """The input as stored in the ledger."""
        return {"role": self.role, "location": self.location, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputFile:
        """An input as read back from the ledger."""
        return cls(str(data["role"]), str(data["location"]), data.get("sha256"))


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """One unit of paid work, ready to be written into the ledger."""

    key: str
    op: str
    request: dict[str, Any]
    stage: str
    rank: int
    replica: int
    #: the model or price tier the job runs on (None when its op has no tiers)
    model: str | None
    num_images: int
    cost_usd: Decimal
    source: str | None = None
    source_sha256: str | None = None
    source_id: str | None = None
    parent_key: str | None = None
    inputs: tuple[InputFile, ...] = ()

    @property
    def prompt(self) -> str | None:
        """The prompt sent, if the op has one."""
        value = self.request.get("prompt")
        return value if isinstance(value, str) else None
