"""Every error ideobatch raises, and what the runner does with each.

The tree (the class decides the action, not the caller)::

    IdeobatchError
    ├── UsageError              bad input from the user: exit 2, nothing sent
    │   └── ManifestError       one or more `file:line: field: message` problems
    ├── ApiError                an answer (or no answer) from the image API
    │   ├── TransientError      retry later: 408/429/5xx, resets, timeouts, bad bodies
    │   ├── PermanentError      this job cannot succeed: 400, 422 (`unsafe`), bad source
    │   └── FatalError          the whole run must stop: 401/402/403
    ├── DownloadError           fetching a produced image failed
    │   ├── DownloadRetryable   network trouble: try the download again
    │   ├── UrlExpired          the image URL is gone: record `url_expired`
    │   └── BadImage            the body is not an acceptable image: record and give up
    ├── LeaseLost               the ledger gave this job to another worker
    ├── LedgerError             the ledger cannot be used: exit 5
    │   ├── LedgerUnavailable   unreachable (or locked, or failing I/O) past its retry window
    │   ├── LedgerNotMigrated   a PostgreSQL ledger behind this release's schema (`db upgrade`)
    │   └── LedgerMissing       no ledger where a read-only command looked (it creates none)
    ├── OutputUnusable          the output folder refuses a write (full, read-only, name too long): exit 5
    └── LockHeld                another run holds this manifest's lock: exit 4

`ApiError.in_doubt` is true when the request may have reached the server and
been billed (a timeout after sending, a reset, a 5xx): such an attempt is
retried but reported as "in doubt". Third-party exceptions (aiohttp, asyncpg,
sqlite3) are translated into these classes in exactly one place each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class IdeobatchError(Exception):
    """Root of every error ideobatch raises on purpose."""


class UsageError(IdeobatchError):
    """A mistake in what the user typed or wrote: exit 2, nothing is sent."""


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in a file."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ManifestError(UsageError):
    """An invalid manifest: carries every problem found, in file order."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        #: the manifest with broken sections defaulted, for checking the rest (set by the loader)
        self.partial: Any = None
        self.placeholder_jobs: set[int] = set()
        super().__init__("\n".join(str(p) for p in self.problems))


class ApiError(IdeobatchError):
    """An answer from the image API (or the lack of one)."""

    #: short machine-readable reason recorded in the ledger (``http_500``, ``timeout``, ...)
    reason: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        status: int | None = None,
        in_doubt: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.status = status
        self.in_doubt = in_doubt


class TransientError(ApiError):
    """Worth retrying; `retry_after` (seconds) is a floor on the wait, if the server gave one."""

    reason = "transient"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        status: int | None = None,
        in_doubt: bool = False,
        retry_after: float | None = None,
        inflight_limit: bool = False,
    ) -> None:
        super().__init__(message, reason=reason, status=status, in_doubt=in_doubt)
        self.retry_after = retry_after
        self.inflight_limit = inflight_limit


class PermanentError(ApiError):
    """The job cannot succeed as written (400, 422 safety, a bad source image)."""

    reason = "invalid_request"


class FatalError(ApiError):
    """The run must stop at once: the key is rejected or the account cannot pay."""

    reason = "auth"


class DownloadError(IdeobatchError):
    """Fetching a produced image failed."""

    reason = "download_failed"


class DownloadRetryable(DownloadError):
    """A network problem while downloading: the download may be tried again."""

    reason = "download_failed"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UrlExpired(DownloadError):
    """The image URL no longer serves the image (it expired)."""

    reason = "url_expired"


class BadImage(DownloadError):
    """The downloaded body is not an image we accept (wrong type, too big, truncated)."""

    reason = "bad_image"


class LeaseLost(IdeobatchError):
    """The job's lease is no longer ours: another worker has reclaimed it."""


class PlanSuperseded(IdeobatchError):
    """A newer plan of the manifest began while this one was being written: this one stops."""


class LedgerError(IdeobatchError):
    """The ledger cannot be used: unreachable, corrupt, of another schema (exit 5)."""


class LedgerUnavailable(LedgerError):
    """The ledger stayed unreachable (or locked, or failing I/O) for longer than its retry window."""


class LedgerNotMigrated(LedgerError):
    """A PostgreSQL ledger whose schema is behind this ideobatch's: `ideobatch db upgrade` first."""


class LedgerMissing(LedgerError):
    """No ledger where a command that only reads looked: it creates none (SPEC §11)."""


class OutputUnusable(IdeobatchError):
    """The output folder refuses a write: disk full, read-only, no permission, a name too long.

    Carries the path and the operating system's reason; the run stops (exit 5)
    and a resume re-downloads what was not written, without paying again.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.reason = reason


class LockHeld(IdeobatchError):
    """Another run holds this manifest's lock."""
