"""Exit codes of every command (SPEC §3)."""

from __future__ import annotations

#: every job succeeded
EXIT_OK = 0
#: the run finished but some jobs failed permanently
EXIT_FAILED_JOBS = 1
#: bad usage or an invalid manifest; nothing was sent
EXIT_USAGE = 2
#: aborted: authentication rejected, budget reached, interrupted
EXIT_ABORTED = 3
#: another run holds the manifest's lock
EXIT_LOCKED = 4
#: the ledger or the output folder cannot be used (unreachable, corrupt, full, read-only)
EXIT_UNUSABLE = 5
