"""Verbs that change jobs on a person's request: `ideobatch retry`."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Connection, and_, delete, select, update

from pipeline.ledger.base import LedgerBase, id_chunks
from pipeline.ledger.faults import verb
from pipeline.ledger.statements import unleased
from pipeline.ledger.tables import PENDING, descriptions, images, jobs
from pipeline.ledger.withdrawals import dropped_by_plan


class Admin(LedgerBase):
    """The part of the `Ledger` that puts finished jobs back to work."""

    @verb
    async def reset_jobs(self, manifest_id: int | None, *, states: Sequence[str], reason: str | None) -> int:
        """Put matching jobs back to pending (``retry``); expired results are regenerated.

        A job the manifest no longer has (`pipeline.ledger.withdrawals`), or
        chained under one (at any depth), is left as it is.
        """
        conditions: list[ColumnElement[bool]] = [jobs.c.state.in_(states)]
        roots = select(jobs.c.id).where(dropped_by_plan())
        if manifest_id is not None:
            conditions.append(jobs.c.manifest_id == manifest_id)
            roots = roots.where(jobs.c.manifest_id == manifest_id)
        dropped = roots.cte("dropped", recursive=True)
        child = jobs.alias("child")
        dropped = dropped.union_all(select(child.c.id).join(dropped, child.c.parent_id == dropped.c.id))
        conditions.append(~jobs.c.id.in_(select(dropped.c.id)))
        if reason is not None:
            conditions.append(jobs.c.error_kind == reason)
        now = time.time()

        def work(conn: Connection) -> int:
            ids = [r.id for r in conn.execute(self._locked(select(jobs.c.id).where(and_(*conditions))))]
            for part in id_chunks(ids):
                expired = [
                    r.id
                    for r in conn.execute(
                        select(jobs.c.id).where(jobs.c.id.in_(part), jobs.c.error_kind == "url_expired")
                    )
                ]
                if expired:
                    conn.execute(delete(images).where(images.c.job_id.in_(expired)))
                    conn.execute(delete(descriptions).where(descriptions.c.job_id.in_(expired)))
                    conn.execute(update(jobs).where(jobs.c.id.in_(expired)).values(response_at=None))
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(part))
                    .values(
                        **unleased(now),
                        state=PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        error_kind=None,
                        error_message=None,
                        finished_at=None,
                    )
                )
            return len(ids)

        return await self._transact(work)
