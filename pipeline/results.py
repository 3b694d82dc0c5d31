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
class RunTally:
    """Counts a run keeps as it goes, for progress and the summary."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    in_doubt: int = 0
    images: int = 0
    withheld: int = 0
    expired: int = 0
    spend_micros: int = 0
    failures: dict[str, int] = field(default_factory=dict)
