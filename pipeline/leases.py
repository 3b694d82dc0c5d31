"""How long a claimed job stays a worker's without a heartbeat, and how often workers look."""

from __future__ import annotations

#: a claimed job is reclaimable by other workers this long after its last heartbeat
DEFAULT_LEASE_S = 60.0
#: how often an idle worker looks for due jobs
POLL_S = 1.0
