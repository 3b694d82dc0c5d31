"""The verbs of working jobs: claims and leases, attempts, answers, completions, retries.

Every write-back checks, row by row, that the caller still holds the job's
lease; a job reclaimed by another worker is reported back as lost, never
overwritten. PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    Connection,
    func,
    insert,
    select,
    update,
)

from pipeline.leases import DEFAULT_LEASE_S
from pipeline.ledger.accounts import drop_slots, renew_slots
from pipeline.ledger.base import LedgerBase, grouped, id_chunks, job_row_values
from pipeline.ledger.faults import verb
from pipeline.ledger.late_answers import EXTRA_MESSAGE, results_count, sort_answers
from pipeline.ledger.records import (
    Claim,
    ClaimedJob,
    Completion,
    Outcome,
    Response,
    claimed_from_row,
    to_micros,
)
from pipeline.ledger.statements import unleased
from pipeline.ledger.tables import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    WITHDRAWN,
    attempts,
    descriptions,
    images,
    jobs,
    manifests,
    runs,
)
from pipeline.ledger.withdrawals import withdraw_children_of_dropped, withdraw_returned
from pipeline.recovery import KeptAnswer
from pipeline.results import IMAGE_DOWNLOADED, IMAGE_PENDING, IMAGE_WITHHELD, ApiResult, DownloadOutcome


class _HasJobId(Protocol):
    @property
    def job_id(self) -> int: ...


#: a write-back for one job (a response, a completion, an outcome)
JobWrite = TypeVar("JobWrite", bound=_HasJobId)


class Execution(LedgerBase):
    """Claiming and working jobs (a part of `Ledger`)."""

    @verb
    async def claim_jobs(
        self,
        manifest_id: int | None,
        owner: str,
        limit: int,
        lease_s: float,
        now: float | None = None,
        *,
        skip: Sequence[int] = (),
        plan_floor: int = 0,
    ) -> Claim:
        """Lease up to ``limit`` due pending jobs, lowest rank first, within their budgets.

        ``manifest_id`` None claims from every manifest but those in ``skip``.
        ``plan_floor`` (with a ``manifest_id``): leave the jobs an older plan
        wrote than this one — a run that claims while its own plan is still
        being written passes that plan's number, so that a job the plan will
        withdraw once complete (`pipeline.ledger.withdrawals`) is not run first.
        """
        now = time.time() if now is None else now
        if limit <= 0:
            return Claim([])
        claim = await self._transact(
            lambda conn: self._claim(conn, manifest_id, owner, limit, lease_s, now, list(skip), plan_floor)
        )
        claim.jobs.sort(key=lambda j: (j.rank, j.id))
        return claim

    def _claim(
        self,
        conn: Connection,
        manifest_id: int | None,
        owner: str,
        limit: int,
        lease_s: float,
        now: float,
        skip: list[int],
        plan_floor: int = 0,
    ) -> Claim:
        sql = self._sql
        params: dict[str, Any] = {"b_now": now, "b_limit": limit}
        if manifest_id is not None:
            query, params["b_manifest"], params["b_floor"] = sql.due, manifest_id, plan_floor
        else:
            query, params["b_skip"] = sql.due_any, skip
        candidates = conn.execute(query, params).all()
        if not candidates:
            return Claim([])
        by_manifest: dict[int, list[Any]] = {}
        for candidate in candidates:
            by_manifest.setdefault(candidate.manifest_id, []).append(candidate)
        plain: list[int] = []
        reserving: list[int] = []
        blocked: list[int] = []
        moves: dict[int, tuple[int, int]] = {}
        for owner_manifest in sorted(by_manifest):  # one order of manifest rows: no deadlocks
            ids, held_back, reserve = self._within_budget(conn, owner_manifest, by_manifest[owner_manifest])
            # a job reserves its estimate only in a manifest with a budget (whose reserve it joins)
            (reserving if reserve else plain).extend(ids)
            if held_back:
                blocked.append(owner_manifest)
            if reserve:
                moves[owner_manifest] = (0, reserve)
        lease_params = {"b_owner": owner, "b_expires": now + lease_s, "b_now": now}
        claimed: list[ClaimedJob] = []
        for lease, ids in ((sql.lease, plain), (sql.lease_reserving, reserving)):
            for part in id_chunks(ids):
                rows = conn.execute(lease, {**lease_params, "b_ids": part})
                claimed.extend(claimed_from_row(r) for r in rows)
        self._move_money(conn, moves)
        return Claim(claimed, tuple(blocked))

    def _within_budget(
        self, conn: Connection, manifest_id: int, candidates: Sequence[Any]
    ) -> tuple[list[int], bool, int]:
        # without a budget nothing is reserved, and claims need not queue on the manifest row
        params = {"b_manifest": manifest_id}
        if (conn.execute(self._sql.budget, params)).scalar_one() is None:
            return [c.id for c in candidates], False, 0
        row = (conn.execute(self._sql.money_locked, params)).one()
        if row.budget_micros is None:
            return [c.id for c in candidates], False, 0
        room = row.budget_micros - row.spent_micros - row.reserved_micros
        chosen: list[int] = []
        reserve = 0
        for candidate in candidates:
            # a job whose paid response is already recorded costs nothing more
            cost = 0 if candidate.response_at is not None else candidate.estimate_micros
            if cost > room - reserve:
                return chosen, True, reserve
            chosen.append(candidate.id)
            reserve += cost
        return chosen, False, reserve

    @verb
    async def renew_leases(self, owner: str, lease_s: float) -> set[int]:
        """Extend every lease ``owner`` holds; returns the ids renewed.

        On PostgreSQL a job row that another transaction has locked at that
        moment (this worker's own write-back, say) is left for the next renewal,
        so it can be missing from the answer although its lease is still held.
        """
        now = time.time()

        # PostgreSQL: the manifest row first and job rows without waiting (SKIP LOCKED), so
        # renewal never holds a job row that this worker's write-backs wait for, nor waits
        # on one they hold (a row skipped now is renewed next time, well before it expires)
        mine = self._locked(
            select(jobs.c.id).where(jobs.c.lease_owner == owner, jobs.c.state == RUNNING), skip_locked=True
        )

        def renew(conn: Connection) -> set[int]:
            renew_slots(conn, owner, now + lease_s)
            conn.execute(
                update(manifests).where(manifests.c.lock_owner == owner).values(lock_expires_at=now + lease_s)
            )
            conn.execute(update(runs).where(runs.c.owner == owner).values(heartbeat_at=now))
            rows = conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(mine.scalar_subquery()), jobs.c.lease_owner == owner)
                .values(lease_expires_at=now + lease_s)
                .returning(jobs.c.id)
            )
            return {r.id for r in rows}

        return await self._transact(renew)

    @verb
    async def reclaim_expired(self, now: float | None = None, owners: Sequence[str] = ()) -> int:
        """Return jobs whose lease expired to pending; their unanswered attempts become in doubt.

        With ``owners``, the jobs of those (known dead) workers are reclaimed
        at once, expired or not.
        """
        now = time.time() if now is None else now
        stale = jobs.c.lease_owner.in_(owners) if owners else jobs.c.lease_expires_at < now

        def reclaim(conn: Connection) -> int:
            rows = conn.execute(
                self._locked(
                    select(jobs.c.id, jobs.c.manifest_id, jobs.c.reserved_micros).where(
                        jobs.c.state == RUNNING, stale
                    ),
                    skip_locked=True,
                )
            ).all()
            message = "the worker stopped before recording an answer"
            self._back_to_pending(conn, rows, now, "lease_expired", message)
            return len(rows)

        return await self._transact(reclaim)

    def _back_to_pending(
        self, conn: Connection, rows: Sequence[Any], now: float, kind: str, message: str
    ) -> None:
        """Running jobs back to pending, untouched: their reservations released, lease cleared.

        Their attempts without an outcome end with ``kind``; those that were
        sent become in doubt (the request may have reached the server). One
        that a complete plan dropped meanwhile is withdrawn instead (never sent again).
        """
        if not rows:
            return
        self._release_reservations(conn, rows)
        for part in id_chunks([r.id for r in rows]):
            _end_unanswered(conn, part, now, kind, message)
            conn.execute(update(jobs).where(jobs.c.id.in_(part)).values(state=PENDING, **unleased(now)))
            withdraw_returned(conn, part, now)

    def _release_reservations(self, conn: Connection, rows: Sequence[Any]) -> None:
        moves: dict[int, tuple[int, int]] = {}
        for row in rows:
            if row.reserved_micros:
                _, reserved = moves.get(row.manifest_id, (0, 0))
                moves[row.manifest_id] = (0, reserved - row.reserved_micros)
        self._move_money(conn, moves)

    def _move_money(self, conn: Connection, moves: dict[int, tuple[int, int]]) -> None:
        """Add (spent, reserved) deltas to manifests; callers do it last, as the manifest row is hot."""
        rows = [
            {"b_manifest": manifest_id, "b_spent": spent, "b_reserved": reserved}
            for manifest_id, (spent, reserved) in sorted(moves.items())
            if spent or reserved
        ]
        if rows:
            conn.execute(self._sql.move_money, rows)

    def _owned(self, conn: Connection, owner: str, ids: Sequence[int]) -> dict[int, Any]:
        """The rows among ``ids`` still leased to ``owner`` (locked until commit)."""
        found: dict[int, Any] = {}
        for part in id_chunks(list(dict.fromkeys(ids))):
            rows = conn.execute(self._sql.owned, {"b_ids": part, "b_owner": owner})
            found.update({r.id: r for r in rows})
        return found

    def _owned_writes(
        self, conn: Connection, owner: str, writes: Sequence[JobWrite]
    ) -> tuple[dict[int, Any], list[JobWrite]]:
        """The rows still leased to ``owner``, and the writes for them (the last one per job)."""
        owned = self._owned(conn, owner, [w.job_id for w in writes])
        return owned, list({w.job_id: w for w in writes if w.job_id in owned}.values())

    @verb
    async def record_attempts(self, owner: str, run_id: int | None, job_ids: Sequence[int]) -> dict[int, int]:
        """Record that a request is about to be sent for each job; returns attempt ids.

        Jobs whose lease was lost are left out of the answer. An attempt with
        no recorded outcome after a crash is what makes a re-send "in doubt".
        """
        now = time.time()
        wanted = list(dict.fromkeys(job_ids))
        if not self.is_sqlite:
            # one statement for the whole batch (its ids are one array parameter, whatever their
            # number), in a transaction of its own. Not in autocommit: PostgreSQL commits an
            # autocommitted statement when it ends, whether or not its client is still there, so a
            # statement cut off from its worker while it waited (for a row lock, say) would commit
            # behind its back, and the verb run again would record every attempt a second time
            # (each request counted twice against retry.attempts, and twice in doubt once given
            # back). A transaction commits only when the worker, having had the answer, says so.
            params = {"b_ids": wanted, "b_owner": owner, "b_run": run_id, "b_now": now}

            def record_one_statement(conn: Connection) -> dict[int, int]:
                rows = conn.execute(self._sql.new_attempts_counted, params)
                return {row.job_id: int(row.id) for row in rows}

            return await self._transact(record_one_statement, urgent=True)

        def record(conn: Connection) -> dict[int, int]:
            result: dict[int, int] = {}
            for part in id_chunks(wanted):
                # one statement: an attempt for each job still leased to `owner`
                created = conn.execute(
                    self._sql.new_attempts, {"b_ids": part, "b_owner": owner, "b_run": run_id, "b_now": now}
                )
                result.update({row.job_id: int(row.id) for row in created})
            for part in id_chunks(list(result)):
                conn.execute(self._sql.count_attempts, {"b_ids": part, "b_now": now})
            return result

        return await self._transact(record, urgent=True)

    @verb
    async def record_responses(
        self, owner: str, responses: Sequence[Response], lease_s: float = DEFAULT_LEASE_S
    ) -> dict[int, int | None]:
        """Record paid answers (images still to download), whoever holds their jobs now.

        Returns, per job recorded, None when the answer is the job's own (its
        caller downloads the images and completes the job), or the index its
        images and descriptions were numbered from when it was recorded as an
        *extra* answer (its caller downloads them; the job is another's).

        A paid answer is never refused (`pipeline.ledger.late_answers`): a job
        whose lease ran out while its call was in flight still gets it. The
        answer is per job: a process works on a job in one task at a time
        (`pipeline.worker`), so a batch holds one answer per job.
        """

        def record(conn: Connection) -> dict[int, int | None]:
            return self._record_answers(conn, owner, responses, time.time(), lease_s)

        return await self._transact(record)

    def _record_answers(
        self, conn: Connection, owner: str, responses: Sequence[Response], now: float, lease_s: float
    ) -> dict[int, int | None]:
        rows: dict[int, Any] = {}
        for part in id_chunks(sorted({r.job_id for r in responses})):  # one lock order: no deadlocks
            query = select(
                jobs.c.id,
                jobs.c.manifest_id,
                jobs.c.state,
                jobs.c.lease_owner,
                jobs.c.reserved_micros,
                jobs.c.response_at,
            ).where(jobs.c.id.in_(part))
            rows.update({r.id: r for r in conn.execute(self._locked(query.order_by(jobs.c.id)))})
        # was it recorded already? only a job with an answer, or finished, can tell (the common
        # case, a job of ours still waiting for its answer, costs no look)
        answered = [r for r in responses if r.job_id in rows and not _is_fresh(rows[r.job_id])]
        answers = sort_answers(owner, responses, rows, self._answered(conn, answered))
        moves = self._store_responses(conn, rows, [*answers.own, *answers.taken], mark_paid=True)
        recorded: dict[int, int | None] = {r.job_id: None for r in [*answers.own, *answers.taken]}
        for part in id_chunks([r.job_id for r in answers.taken]):
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(part))
                .values(state=RUNNING, lease_owner=owner, lease_expires_at=now + lease_s, updated_at=now)
            )
        recorded.update(self._store_extras(conn, rows, answers.extra, moves, now))
        for part in id_chunks([r.attempt_id for r in answers.extra if r.attempt_id is not None]):
            conn.execute(update(attempts).where(attempts.c.id.in_(part)).values(message=EXTRA_MESSAGE))
        for response in answers.again:
            recorded[response.job_id] = self._numbered_from(conn, owner, rows[response.job_id], response)
        self._move_money(conn, moves)
        return recorded

    def _answered(self, conn: Connection, responses: Sequence[Response]) -> set[int]:
        """The attempts among ``responses``' whose answer is recorded already."""
        ids = [r.attempt_id for r in responses if r.attempt_id is not None]
        found: set[int] = set()
        for part in id_chunks(ids):
            query = select(attempts.c.id).where(
                attempts.c.id.in_(part), attempts.c.http_status >= 200, attempts.c.http_status < 300
            )
            found.update(r.id for r in conn.execute(query))
        return found

    def _store_extras(
        self,
        conn: Connection,
        rows: dict[int, Any],
        responses: Sequence[Response],
        moves: dict[int, tuple[int, int]],
        now: float,
    ) -> dict[int, int]:
        """Add extra answers to their jobs, numbered after what each has; their first numbers."""
        first: dict[int, int] = {}
        following: dict[int, int] = {}
        for response in responses:
            job_id = response.job_id
            start = following.get(job_id)
            if start is None:
                start = self._next_index(conn, job_id)
            following[job_id] = start + results_count(response)
            first[job_id] = start
            result = response.result
            shifted = replace(result, images=tuple(replace(i, index=i.index + start) for i in result.images))
            self._insert_results(conn, [(job_id, shifted)], description_from=start)
            if response.attempt_id is not None:
                conn.execute(
                    self._sql.answered,
                    {"b_ids": [response.attempt_id], "b_status": response.http_status, "b_now": now},
                )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(cost_micros=jobs.c.cost_micros + response.cost_micros, updated_at=now)
            )
            manifest_id = rows[job_id].manifest_id
            spent, reserved = moves.get(manifest_id, (0, 0))
            moves[manifest_id] = (spent + response.cost_micros, reserved)
        return first

    def _next_index(self, conn: Connection, job_id: int) -> int:
        """The number after the highest of a job's images and descriptions (0 with none)."""
        highest = [
            conn.execute(select(func.max(table.c.index)).where(table.c.job_id == job_id)).scalar()
            for table in (images, descriptions)
        ]
        return max((int(h) for h in highest if h is not None), default=-1) + 1

    def _numbered_from(self, conn: Connection, owner: str, row: Any, response: Response) -> int | None:
        """What `record_responses` answered when it recorded ``response`` the first time."""
        own = row.state == RUNNING and row.lease_owner == owner
        shown = next((i for i in response.result.images if i.url), None)
        if shown is None:
            return None if own else 0
        index = conn.execute(
            select(images.c.index).where(images.c.job_id == response.job_id, images.c.remote_url == shown.url)
        ).scalar()
        start = 0 if index is None else int(index) - shown.index
        return None if own and start == 0 else start

    @verb
    async def record_downloads(self, job_id: int, found: Sequence[DownloadOutcome]) -> None:
        """Record the downloads of an extra answer's images (the job need not be leased to the caller)."""
        rows = [
            (o.state, o.path, o.sha256, o.bytes, o.width, o.height, o.error, job_id, o.index) for o in found
        ]
        if not rows:
            return

        def work(conn: Connection) -> None:
            conn.exec_driver_sql(self._driver.downloaded, rows)

        await self._transact(work)

    def _store_responses(
        self, conn: Connection, owned: dict[int, Any], responses: Sequence[Response], *, mark_paid: bool
    ) -> dict[int, tuple[int, int]]:
        """Write answers in a few statements: attempts ended, results inserted, jobs marked paid.

        Returns the money to move per manifest, (spent, reserved) deltas: each
        job's reservation becomes its cost, for the caller to apply last.
        ``mark_paid=False`` leaves the jobs' rows to the caller (`complete_jobs`
        writes cost and response time with the job's final state).
        """
        moves: dict[int, tuple[int, int]] = {}
        if not responses:
            return moves
        now = time.time()
        by_status = grouped((r.http_status, r.attempt_id) for r in responses if r.attempt_id is not None)
        for status, attempt_ids in by_status.items():
            for part in id_chunks(attempt_ids):
                conn.execute(self._sql.answered, {"b_ids": part, "b_status": status, "b_now": now})
        self._insert_results(conn, [(r.job_id, r.result) for r in responses])
        if mark_paid:
            for cost, job_ids in grouped((r.cost_micros, r.job_id) for r in responses).items():
                for part in id_chunks(job_ids):
                    conn.execute(self._sql.paid, {"b_ids": part, "b_cost": cost, "b_now": now})
        for response in responses:
            row = owned[response.job_id]
            spent, reserved = moves.get(row.manifest_id, (0, 0))
            moves[row.manifest_id] = (spent + response.cost_micros, reserved - row.reserved_micros)
        return moves

    def _insert_results(
        self, conn: Connection, results: Sequence[tuple[int, ApiResult]], *, description_from: int = 0
    ) -> None:
        """Insert the images (as driver SQL: there are many) and descriptions of answers.

        The descriptions are numbered from ``description_from`` (an extra answer's follow the job's).
        """
        image_rows = [
            (
                job_id,
                image.index,
                image.url,
                image.prompt,
                image.resolution,
                image.seed,
                image.is_image_safe,
                image.style_type,
                IMAGE_WITHHELD if image.withheld else IMAGE_PENDING,
            )
            for job_id, result in results
            for image in result.images
        ]
        if image_rows:
            conn.exec_driver_sql(self._driver.insert_image, image_rows)
        text_rows = [
            {"job_id": job_id, "index": i, "text": text}
            for job_id, result in results
            for i, text in enumerate(result.descriptions, start=description_from)
        ]
        if text_rows:
            conn.execute(insert(descriptions), text_rows)

    @verb
    async def complete_jobs(self, owner: str, completions: Sequence[Completion]) -> set[int]:
        """Finish jobs: record downloads (and the response if not yet), plan children, mark done.

        Returns the ids completed; the others' leases were lost.
        """
        now = time.time()

        def work(conn: Connection) -> set[int]:
            owned, done = self._owned_writes(conn, owner, completions)
            if not done:
                return set()
            fresh = [
                c.response for c in done if c.response is not None and owned[c.job_id].response_at is None
            ]
            moves = self._store_responses(conn, owned, fresh, mark_paid=False)
            paid = {r.job_id: r.cost_micros for r in fresh}
            # a job that ends without a paid answer now gives what its claim reserved back
            for c in done:
                row = owned[c.job_id]
                if c.job_id not in paid and row.reserved_micros:
                    spent, reserved = moves.get(row.manifest_id, (0, 0))
                    moves[row.manifest_id] = (spent, reserved - row.reserved_micros)
            outcomes = [
                (o.state, o.path, o.sha256, o.bytes, o.width, o.height, o.error, c.job_id, o.index)
                for c in done
                for o in c.downloads
            ]
            if outcomes:
                conn.exec_driver_sql(self._driver.downloaded, outcomes)
            children = [
                job_row_values(owned[c.job_id].manifest_id, child, to_micros(child.cost_usd), c.job_id)
                for c in done
                for child in c.children
            ]
            if children:
                self._insert_rows(conn, children)
                withdraw_children_of_dropped(conn, [c.job_id for c in done if c.children], now)
            endings = grouped(
                (
                    (
                        FAILED if c.failure_kind else SUCCEEDED,
                        c.failure_kind,
                        c.failure_message,
                        paid.get(c.job_id),
                    ),
                    c.job_id,
                )
                for c in done
            )
            for (state, kind, message, cost), job_ids in endings.items():
                for part in id_chunks(job_ids):
                    conn.execute(
                        self._sql.finished,
                        {
                            "b_ids": part,
                            "b_state": state,
                            "b_kind": kind,
                            "b_message": message,
                            "b_cost": cost or 0,
                            "b_paid_at": None if cost is None else now,
                            "b_now": now,
                        },
                    )
            self._move_money(conn, moves)
            return {c.job_id for c in done}

        return await self._transact(work)

    @verb
    async def settle_attempts(self, owner: str, outcomes: Sequence[Outcome], *, final: bool) -> set[int]:
        """Record failed attempts: reschedule them (``final=False``) or fail the jobs for good.

        A rescheduled job goes back to pending with its ``next_attempt_at``;
        its budget reservation is released either way.
        """
        now = time.time()

        def work(conn: Connection) -> set[int]:
            owned, kept = self._owned_writes(conn, owner, outcomes)
            # an attempt ends as it did even when its job passed to another worker meanwhile
            # (one that may have been billed is counted in doubt); the job is that worker's
            ended = [
                {
                    "b_id": o.attempt_id,
                    "b_status": o.http_status,
                    "b_kind": o.error_kind,
                    "b_message": o.message[:2000],
                    "b_doubt": o.in_doubt,
                    "b_now": now,
                }
                for o in [*kept, *(o for o in outcomes if o.job_id not in owned)]
                if o.attempt_id is not None
            ]
            if ended:
                conn.execute(self._sql.attempt_failed, ended)
            if not kept:
                return set()
            conn.execute(
                self._sql.failed if final else self._sql.rescheduled,
                [
                    {
                        "b_id": o.job_id,
                        "b_kind": o.error_kind,
                        "b_message": o.message[:2000],
                        "b_next": o.next_attempt_at or now,
                        "b_now": now,
                        **({} if final else {"b_uncount": 0 if o.counts or o.attempt_id is None else 1}),
                    }
                    for o in kept
                ],
            )
            if not final:
                withdraw_returned(conn, [o.job_id for o in kept], now)
            self._release_reservations(conn, [owned[o.job_id] for o in kept])
            return {o.job_id for o in kept}

        return await self._transact(work)

    @verb
    async def release_jobs(self, owner: str, job_ids: Sequence[int] | None) -> None:
        """Give leased jobs back as pending, untouched (shutdown, or a run-stopping error).

        Attempts of these jobs without a recorded outcome are marked in doubt:
        the request may have reached the server. ``job_ids=None``: every job
        ``owner`` still holds.
        """
        now = time.time()

        def work(conn: Connection) -> None:
            wanted = job_ids
            if wanted is None:
                held = conn.execute(
                    select(jobs.c.id).where(jobs.c.lease_owner == owner, jobs.c.state == RUNNING)
                )
                wanted = [r.id for r in held]
            owned = self._owned(conn, owner, wanted)
            self._back_to_pending(conn, list(owned.values()), now, "cancelled", "run stopped")
            if job_ids is None:  # the owner stops: its places in flight go back too
                drop_slots(conn, owner)

        return await self._transact(work)

    @verb
    async def import_answers(self, manifest_id: int, answers: Sequence[KeptAnswer]) -> set[str]:
        """Record paid answers kept on disk while the ledger was away (`pipeline.recovery`).

        An answer whose job has none recorded yet is recorded as if it had just
        arrived (paid, its attempt answered and no longer in doubt), with the
        downloads it made; the job keeps its state, and the next claim finishes
        it from there without calling the API (a job withdrawn meanwhile is
        pending again, to download what it paid for). For a job whose answer is
        recorded already, only downloads the ledger does not know are added.
        A job answered meanwhile by another attempt (its lease had passed to
        another worker) takes the kept answer as extra results
        (`pipeline.ledger.late_answers`): paid for, it is never dropped.
        Returns the job keys the ledger now holds an answer for (their files
        can go); a key the manifest does not have is left out.
        """
        now = time.time()
        by_key = {a.job_key: a for a in answers}

        def work(conn: Connection) -> set[str]:
            rows = {}
            for part in id_chunks(list(by_key)):
                query = select(
                    jobs.c.id,
                    jobs.c.key,
                    jobs.c.manifest_id,
                    jobs.c.state,
                    jobs.c.reserved_micros,
                    jobs.c.response_at,
                ).where(jobs.c.manifest_id == manifest_id, jobs.c.key.in_(part))
                rows.update({r.key: r for r in conn.execute(self._locked(query))})
            # a job withdrawn since (a plan dropped it) is paid for: it finishes its downloads
            unfinished = (PENDING, RUNNING, WITHDRAWN)
            fresh = [
                Response(rows[key].id, answer.attempt_id, answer.result, answer.cost_micros)
                for key, answer in by_key.items()
                if key in rows and _is_fresh(rows[key])
            ]
            owned = {rows[key].id: rows[key] for key in rows}
            moves = self._store_responses(conn, owned, fresh, mark_paid=True)
            revived = [r.job_id for r in fresh if owned[r.job_id].state == WITHDRAWN]
            for part in id_chunks(revived):
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id.in_(part))
                    .values(state=PENDING, next_attempt_at=now, updated_at=now)
                )
            # a job answered meanwhile by another attempt (or finished): this answer was paid
            # too, and is kept as extra results (`late_answers`); one recorded already is not
            others = [
                Response(rows[key].id, answer.attempt_id, answer.result, answer.cost_micros)
                for key, answer in by_key.items()
                if key in rows and answer.attempt_id is not None and not _is_fresh(rows[key])
            ]
            answered = self._answered(conn, others)
            extras = [r for r in others if r.attempt_id not in answered]
            first = self._store_extras(conn, owned, extras, moves, now)
            for part in id_chunks([r.attempt_id for r in extras if r.attempt_id is not None]):
                conn.execute(update(attempts).where(attempts.c.id.in_(part)).values(message=EXTRA_MESSAGE))
            for response in fresh:
                if response.attempt_id is not None:
                    conn.execute(
                        update(attempts)
                        .where(attempts.c.id == response.attempt_id, attempts.c.job_id == response.job_id)
                        .values(
                            ended_at=func.coalesce(attempts.c.ended_at, now),
                            http_status=200,
                            in_doubt=False,
                            error_kind=None,
                            message="answer recorded from the file kept while the ledger was away",
                        )
                    )
            extra_jobs = {r.job_id for r in extras}
            downloads = [
                (o.state, o.path, o.sha256, o.bytes, o.width, o.height, o.error, job_id, o.index + shift)
                for key, answer in by_key.items()
                if key in rows
                for job_id in [rows[key].id]
                # an extra answer's downloads follow the job's own results; a job finished
                # meanwhile (another worker paid again) keeps its own downloads
                for shift in [first[job_id] if job_id in extra_jobs else 0]
                if job_id in extra_jobs or rows[key].state in unfinished
                for o in answer.downloads
                if o.state == IMAGE_DOWNLOADED
            ]
            if downloads:
                conn.exec_driver_sql(self._driver.downloaded, downloads)
            self._move_money(conn, moves)
            return {key for key in by_key if key in rows}

        return await self._transact(work)


def _is_fresh(row: Any) -> bool:
    """Whether a job would take a kept answer as its own: none recorded, and not finished."""
    return row.response_at is None and row.state in (PENDING, RUNNING, WITHDRAWN)


def _end_unanswered(conn: Connection, job_ids: Sequence[int], now: float, kind: str, message: str) -> None:
    """End the jobs' attempts that have no outcome; those that were sent become in doubt."""
    conn.execute(
        update(attempts)
        .where(attempts.c.job_id.in_(job_ids), attempts.c.ended_at.is_(None))
        .values(ended_at=now, in_doubt=attempts.c.sent, error_kind=kind, message=message)
    )
