"""Jobs taken out of a manifest: withdrawn, never claimed, their history kept (SPEC §4, §6).

Every plan has a number (`manifests.plan_seq`, one more at each re-plan) and
marks each job it expands with it (`jobs.plan_seq`). Once a plan is complete
(every batch written), a root job still marked with an older number is one
the manifest no longer has: if it is pending and no paid answer of it is
recorded, it becomes ``withdrawn`` — never claimed, so never paid for — and
so do the pending chained jobs under it. A job already answered, finished or
in flight keeps its state and its history (attempts, images, cost); one in
flight that comes back to pending later is withdrawn then (`withdraw_returned`).

Jobs no plan makes (chained children, rerolls) have no plan number; a plan
that has a withdrawn job again makes it pending again (`DriverSql.plan_job`).
Only the manifest's own jobs are touched: the ledger ties jobs to a manifest
by its name (`manifests.id`).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, Connection, FromClause, and_, bindparam, func, select, update

from pipeline.ledger.base import LedgerBase, id_chunks
from pipeline.ledger.faults import verb
from pipeline.ledger.tables import PENDING, WITHDRAWN, jobs, manifests


def dropped_by_plan(table: FromClause = jobs) -> ColumnElement[bool]:
    """A root job (of ``table``, `jobs` or an alias) that its manifest's last complete plan no longer has."""
    complete = (
        select(manifests.c.plan_seq)
        .where(manifests.c.id == table.c.manifest_id, manifests.c.plan_complete.is_(True))
        .scalar_subquery()
    )
    # an incomplete plan drops nothing (coalesce: no plan number is below 0)
    return and_(table.c.plan_seq.is_not(None), table.c.plan_seq < func.coalesce(complete, 0))


def _withdrawable() -> list[ColumnElement[bool]]:
    """A job that may be withdrawn: pending, and no paid answer of it recorded (it would be lost)."""
    return [jobs.c.state == PENDING, jobs.c.response_at.is_(None)]


def withdraw_returned(conn: Connection, job_ids: Sequence[int], now: float) -> None:
    """Withdraw those of these jobs, just back to pending, that a complete plan has dropped meanwhile."""
    for part in id_chunks(list(job_ids)):
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_(part), *_withdrawable(), dropped_by_plan())
            .values(state=WITHDRAWN, updated_at=now)
        )


def withdraw_children_of_dropped(conn: Connection, parent_ids: Sequence[int], now: float) -> None:
    """Withdraw the chained jobs just made for these parents where a complete plan dropped the parent.

    A job in flight when its plan dropped it still records its answer; the
    jobs of its `then:` stages are not run (the manifest no longer has them).
    """
    parent = jobs.alias("parent")
    for part in id_chunks(list(dict.fromkeys(parent_ids))):
        dropped = select(parent.c.id).where(parent.c.id.in_(part), dropped_by_plan(parent))
        conn.execute(
            update(jobs)
            .where(jobs.c.parent_id.in_(dropped), *_withdrawable())
            .values(state=WITHDRAWN, updated_at=now)
        )


def _restage_chained(conn: Connection, manifest_id: int, now: float) -> None:
    """Give chained jobs the stage of their parent as the plan has it now.

    A chained job's stage is its parent's and its own place in the parent's
    `then:` (``"2.0"``: jobs[2].then[0]); a re-plan moves a kept job whose
    entry moved (one above it removed), and its chained jobs follow here, one
    generation per pass, so that the `then:` stage they make their own
    children from is theirs.
    """
    parent = jobs.alias("parent")
    while True:
        stale = conn.execute(
            select(jobs.c.id, jobs.c.stage, parent.c.stage.label("parent_stage"))
            .join(parent, parent.c.id == jobs.c.parent_id)
            .where(jobs.c.manifest_id == manifest_id, ~jobs.c.stage.like(parent.c.stage.concat(".%")))
        ).all()
        if not stale:
            return
        conn.execute(
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(stage=bindparam("b_stage"), updated_at=now),
            [
                {"b_id": row.id, "b_stage": f"{row.parent_stage}.{row.stage.rsplit('.', 1)[-1]}"}
                for row in stale
            ],
        )


class Withdrawals(LedgerBase):
    """The part of the `Ledger` that withdraws the jobs a manifest no longer has."""

    @verb
    async def withdraw_unplanned(
        self, manifest_id: int, plan_seq: int, stages: Collection[str] | None = None
    ) -> int:
        """After plan ``plan_seq`` of the manifest is complete, withdraw the jobs it dropped.

        Pending root jobs of an older plan, and pending chained jobs under any
        job of an older plan, are withdrawn unless a paid answer of theirs is
        recorded; chained jobs withdrawn earlier whose root this plan has again
        are pending again; chained jobs take their parent's stage as this plan
        has it. ``stages``: the references of every `then:` stage the plan's
        manifest has (`pipeline.expand.chained_stage_refs`); a pending chained
        job of a stage not among them (taken out of a kept entry) is withdrawn
        too, and none is made pending again. Without it (a plan overtaken by
        a newer one) nothing is made pending again. Returns how many were
        withdrawn. Call it only once
        every batch of the plan is written: a job a plan has not reached yet
        still carries the older number.
        """
        now = time.time()
        older = and_(
            jobs.c.manifest_id == manifest_id, jobs.c.plan_seq.is_not(None), jobs.c.plan_seq < plan_seq
        )

        def work(conn: Connection) -> int:
            _restage_chained(conn, manifest_id, now)
            roots = int(
                conn.execute(
                    update(jobs).where(older, *_withdrawable()).values(state=WITHDRAWN, updated_at=now)
                ).rowcount
            )
            # the chained jobs under a dropped job (at any depth), made before it was dropped
            dropped = select(jobs.c.id).where(older).cte("dropped", recursive=True)
            child = jobs.alias("child")
            dropped = dropped.union_all(select(child.c.id).join(dropped, child.c.parent_id == dropped.c.id))
            chained = conn.execute(
                select(
                    jobs.c.id,
                    jobs.c.state,
                    jobs.c.stage,
                    jobs.c.id.in_(select(dropped.c.id)).label("dropped"),
                ).where(
                    jobs.c.manifest_id == manifest_id,
                    jobs.c.parent_id.is_not(None),
                    jobs.c.state.in_((PENDING, WITHDRAWN)),
                    jobs.c.response_at.is_(None),
                )
            ).all()
            # (one statement per batch: SQLite counts no rows for an UPDATE that starts WITH)
            gone = [r for r in chained if r.dropped or (stages is not None and r.stage not in stages)]
            withdraw = [r.id for r in gone if r.state == PENDING]
            kept = {r.id for r in gone}
            revive = (
                [] if stages is None else [r.id for r in chained if r.id not in kept and r.state == WITHDRAWN]
            )
            for ids, before, after in ((withdraw, PENDING, WITHDRAWN), (revive, WITHDRAWN, PENDING)):
                for part in id_chunks(ids):
                    conn.execute(
                        update(jobs)
                        .where(jobs.c.id.in_(part), jobs.c.state == before)
                        .values(state=after, updated_at=now)
                    )
            return roots + len(withdraw)

        return await self._transact(work)
