"""What a call produces, in the shapes the client returns and the ledger records."""

from __future__ import annotations

from dataclasses import dataclass, field

#: image download states recorded in the ledger
IMAGE_PENDING = "pending"
IMAGE_DOWNLOADED = "downloaded"
IMAGE_WITHHELD = "withheld"
IMAGE_EXPIRED = "expired"
IMAGE_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One entry of a response's `data`: the image's URL (None when withheld) and metadata."""

    index: int
    url: str | None
    prompt: str | None
    resolution: str | None
    seed: int | None
    is_image_safe: bool
    style_type: str | None = None

    @property
    def withheld(self) -> bool:
        """The safety filter withheld this image: billed, but there is nothing to download."""
        return not self.is_image_safe or not self.url


@dataclass(frozen=True, slots=True)
class ApiResult:
    """A parsed successful response: images (generate/remix/upscale) or descriptions.

    ``sanitized`` names the fields (``prompt``, ``text``, ...) whose text held
    characters no ledger can store — NULs, which were removed, and lone
    surrogates, which became U+FFFD — so that the run can say so.
    """

    images: tuple[GeneratedImage, ...] = ()
    descriptions: tuple[str, ...] = ()
    created: float | None = None
    sanitized: tuple[str, ...] = ()

    @property
    def sanitized_note(self) -> str:
        """What was cleaned, for the run's log (empty when nothing was)."""
        if not self.sanitized:
            return ""
        fields = ", ".join(self.sanitized)
        return (
            f"the API's {fields} held NULs or lone surrogates, which no ledger can store: "
            "recorded with the NULs removed and the surrogates replaced by U+FFFD"
        )


@dataclass(frozen=True, slots=True)
class DownloadOutcome:
    """What became of one image: on disk (path, hash, size), withheld, expired or failed."""

    index: int
    state: str
    path: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


@dataclass(slots=True)
class JobEnd:
    """What executing one job came to this time, for the run's tally."""

    job_id: int
    succeeded: bool = False
    #: the reason the job failed for good this time
    failure: str | None = None
    #: it goes back to wait for another attempt, this long, after an error shown as `retry_reason`
    retried: bool = False
    retry_in_s: float = 0.0
    retry_reason: str | None = None
    #: the attempt may have been billed without an answer being recorded
    in_doubt: bool = False
    #: the call was refused unbilled for the provider's in-flight limit (a 429)
    rate_limited: bool = False
    spend_micros: int = 0
    images: int = 0
    withheld: int = 0
    expired: int = 0
    #: jobs of `then:` stages it planned
    children: int = 0
    #: another worker took the job over
    lease_lost: bool = False
    #: where its paid answer was kept while the ledger was away
    kept_answer: str | None = None


@dataclass(slots=True)
class RunTally:
    """Counts a run keeps as it goes, for progress and the summary; `add` is its only writer."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    in_doubt: int = 0
    images: int = 0
    withheld: int = 0
    expired: int = 0
    spend_micros: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    lost_leases: int = 0
    kept_answers: list[str] = field(default_factory=list)
    #: calls refused for the provider's in-flight limit (not billed, not counted as attempts)
    rate_limited: int = 0

    def add(self, end: JobEnd) -> None:
        """Count one job's end."""
        self.succeeded += end.succeeded
        self.retried += end.retried
        self.in_doubt += end.in_doubt
        self.images += end.images
        self.withheld += end.withheld
        self.expired += end.expired
        self.spend_micros += end.spend_micros
        self.lost_leases += end.lease_lost
        self.rate_limited += end.rate_limited
        if end.failure is not None:
            self.failed += 1
            self.failures[end.failure] = self.failures.get(end.failure, 0) + 1
        if end.kept_answer is not None:
            self.kept_answers.append(end.kept_answer)
