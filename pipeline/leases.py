"""How long a claimed job stays a worker's without a heartbeat, and how often workers look."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.ledger.repository import Ledger

HOST = socket.gethostname()

#: a claimed job is reclaimable by other workers this long after its last heartbeat
DEFAULT_LEASE_S = 60.0
#: how often an idle worker looks for due jobs
POLL_S = 1.0
#: how often it looks while the last jobs run in other processes (so that it ends with them)
ENDING_POLL_S = 0.1


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def reclaim_dead_on_this_host(
    ledger: Ledger, before: Callable[[], Awaitable[None]] | None = None
) -> int:
    """Take back at once the jobs of runs on this host whose process is gone.

    Their leases would expire anyway; on the same host we know sooner. (A
    reused pid only delays this until the lease expires.) ``before`` runs
    once the dead are known and before their jobs are taken back: a dead run
    wrote its kept answers before it ended, so recording them then sees all,
    and none of its jobs is claimable (and paid for again) before that.
    """
    dead = [owner for owner, pid in await ledger.unfinished_runs(HOST) if not pid_alive(pid)]
    if not dead:
        return 0
    if before is not None:
        await before()
    return await ledger.reclaim_dead(dead)
