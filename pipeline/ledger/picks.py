"""Verbs of picking: a person's verdict on an image, and the jobs that replace rejected ones."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, delete, select, update

from pipeline.jobs import PlannedJob
from pipeline.ledger.base import LedgerBase, job_row_values
from pipeline.ledger.faults import verb
from pipeline.ledger.records import ClaimedJob, claimed_from_row, to_micros
from pipeline.ledger.statements import CLAIM_COLUMNS
from pipeline.ledger.tables import REJECTED, VERDICTS, images, jobs, picks


@dataclass(frozen=True)
class RerollCandidate:
    """A rejected image that has no replacement job yet, with the job that made it."""

    image_id: int
    index: int
    seed: int | None
    job: ClaimedJob


class Picks(LedgerBase):
    """The part of the `Ledger` that records verdicts and plans rerolls."""

    @verb
    async def set_pick(self, image_id: int, verdict: str | None) -> bool:
        """Record a verdict on an image (``picked``/``rejected``; None forgets it); False: no such image."""
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"not a verdict: {verdict!r}")
        from sqlalchemy.dialects import postgresql, sqlite  # the review server's, not a run's

        now = time.time()
        dialect = postgresql if not self.is_sqlite else sqlite

        def work(conn: Connection) -> bool:
            if conn.execute(select(images.c.id).where(images.c.id == image_id)).first() is None:
                return False
            if verdict is None:
                conn.execute(delete(picks).where(picks.c.image_id == image_id))
                return True
            upsert = dialect.insert(picks).values(image_id=image_id, verdict=verdict, decided_at=now)
            conn.execute(
                upsert.on_conflict_do_update(
                    index_elements=[picks.c.image_id], set_={"verdict": verdict, "decided_at": now}
                )
            )
            return True

        return await self._transact(work)

    @verb
    async def reroll_candidates(self, manifest_id: int) -> list[RerollCandidate]:
        """The manifest's rejected images that no reroll has replaced yet, oldest first."""
        query = (
            select(images.c.id, images.c.index, images.c.seed, *CLAIM_COLUMNS)
            .select_from(picks)
            .join(images, images.c.id == picks.c.image_id)
            .join(jobs, jobs.c.id == images.c.job_id)
            .where(
                jobs.c.manifest_id == manifest_id,
                picks.c.verdict == REJECTED,
                picks.c.reroll_job_id.is_(None),
            )
            .order_by(images.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            RerollCandidate(image_id=r[0], index=r[1], seed=r[2], job=claimed_from_row(r[3:])) for r in rows
        ]

    @verb
    async def add_rerolls(
        self, manifest_id: int, rerolls: Sequence[tuple[RerollCandidate, PlannedJob]]
    ) -> list[PlannedJob]:
        """Plan each replacement job and tie it to its rejected image, in one transaction.

        An image judged again meanwhile (no longer rejected) or already
        replaced is skipped; returns the jobs planned.
        """

        def work(conn: Connection) -> list[PlannedJob]:
            made: list[PlannedJob] = []
            for candidate, job in rerolls:
                still = conn.execute(
                    self._locked(
                        select(picks.c.image_id).where(
                            picks.c.image_id == candidate.image_id,
                            picks.c.verdict == REJECTED,
                            picks.c.reroll_job_id.is_(None),
                        )
                    )
                ).first()
                if still is None:
                    continue
                row = job_row_values(manifest_id, job, to_micros(job.cost_usd), candidate.job.parent_id)
                self._insert_rows(conn, [row])
                job_id = conn.execute(
                    select(jobs.c.id).where(jobs.c.manifest_id == manifest_id, jobs.c.key == job.key)
                ).scalar_one()
                conn.execute(
                    update(picks).where(picks.c.image_id == candidate.image_id).values(reroll_job_id=job_id)
                )
                made.append(job)
            return made

        return await self._transact(work)
