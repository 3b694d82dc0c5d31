"""The statements of the ledger's hot paths (claim, attempt, answer, complete, settle), built once.

Building a SQLAlchemy statement and computing its cache key costs more
Python time than running it on SQLite: a worker that claims and completes
thousands of jobs a second cannot afford to rebuild a dozen statements per
batch. These take every value as a bound parameter instead; the repository
passes the values. Parameters are named ``b_*`` so that they never clash with
the column names SQLAlchemy reserves in ``UPDATE ... SET``.

Lists of ids are one parameter, so that the SQL text (and with it the
driver's prepared statement) is the same for every batch size: an array on
PostgreSQL (``id = ANY($1)``), a JSON text on SQLite (``id IN (SELECT value
FROM json_each(?))``). SQLAlchemy's expanding ``IN (?, ?, ...)`` re-renders
the statement on every execution, which costs more than SQLite running it.

A job's lease is checked as ``lease_owner = :owner`` alone: every verb clears
the owner when a job leaves `running`, so the owner implies the state, and
without a ``state`` test PostgreSQL's planner is not tempted by the state
index, whose entries for `running` are mostly dead under a busy run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    String,
    TypeDecorator,
    any_,
    bindparam,
    case,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Dialect

from pipeline.ledger.tables import (
    FAILED,
    PENDING,
    RUNNING,
    WITHDRAWN,
    Id,
    attempts,
    images,
    jobs,
    manifests,
)

#: the columns a planned job is inserted with, in the order of `DriverSql.insert_job`'s values
JOB_COLUMNS = (
    "manifest_id",
    "key",
    "op",
    "stage",
    "rank",
    "replica",
    "request",
    "model",
    "num_images",
    "source",
    "source_sha256",
    "source_id",
    "inputs",
    "parent_id",
    "state",
    "attempts",
    "next_attempt_at",
    "estimate_micros",
    "reserved_micros",
    "cost_micros",
    "created_at",
    "updated_at",
    "plan_seq",
)


#: an image row as `_insert_results` writes it
IMAGE_COLUMNS = (
    "job_id",
    "index",
    "remote_url",
    "prompt",
    "resolution",
    "seed",
    "is_image_safe",
    "style_type",
    "state",
)
#: what a download sets on its image row, followed by the row's job_id and index
DOWNLOAD_COLUMNS = ("state", "local_path", "sha256", "bytes", "width", "height", "error")


class DriverSql:
    """Row-by-row writes as driver SQL, given to the driver's ``executemany`` as tuples.

    Planning inserts a million job rows, and every completion an image row or
    more: as tuples they skip SQLAlchemy's per-row parameter processing (some
    20 us a row, as much again as expanding the job that produced the row).
    """

    def __init__(self, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        postgres = dialect.name == "postgresql"

        def marks(count: int, first: int = 1) -> list[str]:
            return [f"${n}" for n in range(first, first + count)] if postgres else ["?"] * count

        def insert_sql(table: str, columns: tuple[str, ...]) -> str:
            names = ", ".join(quote(c) for c in columns)
            return f"INSERT INTO {quote(table)} ({names}) VALUES ({', '.join(marks(len(columns)))})"

        conflict = f"ON CONFLICT ({quote('manifest_id')}, {quote('key')})"
        #: a new job (`JOB_COLUMNS`: a child, a reroll); a key the manifest already has is left alone
        self.insert_job = f"{insert_sql(jobs.name, JOB_COLUMNS)} {conflict} DO NOTHING"
        state, table, seq = quote("state"), quote(jobs.name), quote("plan_seq")
        moved = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in ("plan_seq", "stage", "rank"))
        #: a job a plan makes (`JOB_COLUMNS`): a key the manifest already has keeps its row, now of
        #: this plan and at its place in the manifest as it is now (an entry above it may have gone);
        #: one withdrawn by an earlier plan is pending again (`pipeline.ledger.withdrawals`)
        self.plan_job = (
            f"{insert_sql(jobs.name, JOB_COLUMNS)} {conflict} DO UPDATE SET {moved}, "
            f"{state} = CASE WHEN {table}.{state} = '{WITHDRAWN}' THEN '{PENDING}' ELSE {table}.{state} END"
            # a plan a newer one has overtaken leaves the rows that one wrote as it wrote them
            f" WHERE {table}.{seq} IS NULL OR {table}.{seq} <= excluded.{seq}"
        )
        #: an image of an answer (`IMAGE_COLUMNS`)
        self.insert_image = insert_sql(images.name, IMAGE_COLUMNS)
        sets = ", ".join(f"{quote(c)} = {m}" for c, m in zip(DOWNLOAD_COLUMNS, marks(7), strict=True))
        job_id, index = marks(2, first=len(DOWNLOAD_COLUMNS) + 1)
        where = f"{quote('job_id')} = {job_id} AND {quote('index')} = {index}"
        #: a download's outcome: `DOWNLOAD_COLUMNS`, then the image's job_id and index
        self.downloaded = f"UPDATE {quote(images.name)} SET {sets} WHERE {where}"


#: the columns a claim hands to the worker (`records.claimed_from_row` unpacks them in this order)
CLAIM_COLUMNS = (
    jobs.c.id,
    jobs.c.manifest_id,
    jobs.c.key,
    jobs.c.op,
    jobs.c.stage,
    jobs.c.rank,
    jobs.c.replica,
    jobs.c.request,
    jobs.c.model,
    jobs.c.num_images,
    jobs.c.source,
    jobs.c.source_sha256,
    jobs.c.source_id,
    jobs.c.parent_id,
    jobs.c.attempts,
    jobs.c.estimate_micros,
    jobs.c.response_at,
    jobs.c.inputs,
)


class JsonIds(TypeDecorator[Sequence[int]]):
    """A list of ids bound as JSON text, for SQLite's ``json_each``."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Sequence[int] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(list(value))


def unleased(now: Any) -> dict[str, Any]:
    """The values of a job leaving `running`: no lease and no reservation.

    A job outside `running` never has an owner: the lease checks test the
    owner alone (see the module docstring). Every write that takes a job out
    of `running` sets these.
    """
    return {"lease_owner": None, "lease_expires_at": None, "reserved_micros": 0, "updated_at": now}


class Statements:
    """One backend's prebuilt statements (PostgreSQL's lock rows; SQLite's BEGIN IMMEDIATE already does)."""

    def __init__(self, postgres: bool) -> None:
        row_locks = postgres

        def among(column: ColumnElement[int], name: str = "b_ids") -> ColumnElement[bool]:
            """``column`` is one of the ids in parameter ``name``."""
            if postgres:
                from sqlalchemy.dialects.postgresql import ARRAY

                return column == any_(bindparam(name, type_=ARRAY(BigInteger())))
            ids = func.json_each(bindparam(name, type_=JsonIds())).table_valued("value")
            return column.in_(select(ids.c.value))

        leased = jobs.c.lease_owner == bindparam("b_owner")
        # --- claim
        due = (
            select(jobs.c.id, jobs.c.manifest_id, jobs.c.estimate_micros, jobs.c.response_at)
            .where(
                jobs.c.manifest_id == bindparam("b_manifest"),
                jobs.c.state == PENDING,
                jobs.c.next_attempt_at <= bindparam("b_now", type_=Float),
                # while a plan is written, the jobs it has not reached (an older plan's) wait for it
                or_(jobs.c.plan_seq.is_(None), jobs.c.plan_seq >= bindparam("b_floor", type_=BigInteger)),
            )
            .order_by(jobs.c.rank, jobs.c.id)
            .limit(bindparam("b_limit", type_=BigInteger))
        )
        self.due = due.with_for_update(skip_locked=True) if row_locks else due
        # every manifest but those skipped (set aside by a worker), lowest rank first: the
        # manifests take turns, and a manifest whose jobs all wait keeps no other waiting
        due_any = (
            select(jobs.c.id, jobs.c.manifest_id, jobs.c.estimate_micros, jobs.c.response_at)
            .where(
                jobs.c.state == PENDING,
                jobs.c.next_attempt_at <= bindparam("b_now", type_=Float),
                ~among(jobs.c.manifest_id, "b_skip"),
            )
            .order_by(jobs.c.rank, jobs.c.id)
            .limit(bindparam("b_limit", type_=BigInteger))
        )
        self.due_any = due_any.with_for_update(skip_locked=True) if row_locks else due_any
        self.budget = select(manifests.c.budget_micros).where(manifests.c.id == bindparam("b_manifest"))
        money = select(
            manifests.c.budget_micros, manifests.c.spent_micros, manifests.c.reserved_micros
        ).where(manifests.c.id == bindparam("b_manifest"))
        # NO KEY UPDATE: claims queue on the manifest row, jobs inserted for it (FK checks) do not
        self.money_locked = money.with_for_update(key_share=True) if row_locks else money
        lease: dict[str, Any] = {
            "state": RUNNING,
            "lease_owner": bindparam("b_owner"),
            "lease_expires_at": bindparam("b_expires"),
            "updated_at": bindparam("b_now"),
        }
        self.lease = update(jobs).where(among(jobs.c.id)).values(**lease).returning(*CLAIM_COLUMNS)
        self.lease_reserving = (
            update(jobs)
            .where(among(jobs.c.id))
            .values(
                **lease,
                # a job whose paid answer is recorded costs nothing more
                reserved_micros=case((jobs.c.response_at.is_(None), jobs.c.estimate_micros), else_=0),
            )
            .returning(*CLAIM_COLUMNS)
        )

        # --- money: one row per manifest, touched last in a transaction (it is the hot row)
        self.move_money = (
            update(manifests)
            .where(manifests.c.id == bindparam("b_manifest"))
            .values(
                spent_micros=manifests.c.spent_micros + bindparam("b_spent"),
                reserved_micros=manifests.c.reserved_micros + bindparam("b_reserved"),
            )
        )

        # --- write-backs
        owned = select(
            jobs.c.id, jobs.c.manifest_id, jobs.c.reserved_micros, jobs.c.attempts, jobs.c.response_at
        ).where(among(jobs.c.id), leased)
        self.owned = owned.with_for_update() if row_locks else owned
        sendable = select(
            jobs.c.id,
            bindparam("b_run", type_=Id),
            jobs.c.attempts + 1,
            bindparam("b_now", type_=Float),
            true(),
            false(),
            # a job whose paid answer is recorded is never sent again (`late_answers`)
        ).where(among(jobs.c.id), leased, jobs.c.response_at.is_(None))
        if row_locks:
            # PostgreSQL: the rows locked (in one order) as they are read, so that a job another
            # worker took over meanwhile (its claim committed while this statement ran) is read
            # again as it is now, and left out: its lease is no longer ours
            sendable = sendable.order_by(jobs.c.id).with_for_update(key_share=True)
        self.new_attempts = (
            insert(attempts)
            .from_select(["job_id", "run_id", "number", "started_at", "sent", "in_doubt"], sendable)
            .returning(attempts.c.id, attempts.c.job_id)
        )
        self.count_attempts = (
            update(jobs)
            .where(among(jobs.c.id))
            .values(attempts=jobs.c.attempts + 1, updated_at=bindparam("b_now"))
        )
        # PostgreSQL: both as one statement (the jobs counted are those an attempt was made for)
        created = self.new_attempts.cte("created")
        counted = (
            update(jobs)
            .where(jobs.c.id.in_(select(created.c.job_id)))
            .values(attempts=jobs.c.attempts + 1, updated_at=bindparam("b_now"))
            .cte("counted")
        )
        self.new_attempts_counted = select(created.c.id, created.c.job_id).add_cte(counted)
        # answers and completions mostly share their values: one statement per distinct value set
        self.answered = (
            update(attempts)
            .where(among(attempts.c.id))
            .values(
                ended_at=bindparam("b_now"),
                http_status=bindparam("b_status"),
                # answered after all, though a reclaim had ended it "in doubt" (`late_answers`)
                in_doubt=false(),
                error_kind=None,
                message=None,
            )
        )
        self.paid = (
            update(jobs)
            .where(among(jobs.c.id))
            .values(
                response_at=bindparam("b_now"),
                cost_micros=jobs.c.cost_micros + bindparam("b_cost"),
                reserved_micros=0,
                updated_at=bindparam("b_now"),
            )
        )
        self.finished = (
            update(jobs)
            .where(among(jobs.c.id))
            .values(
                **unleased(bindparam("b_now")),
                state=bindparam("b_state"),
                finished_at=bindparam("b_now"),
                error_kind=bindparam("b_kind"),
                error_message=bindparam("b_message"),
                # the answer, when it comes with the completion: one row version instead of two
                cost_micros=jobs.c.cost_micros + bindparam("b_cost", type_=BigInteger),
                response_at=func.coalesce(bindparam("b_paid_at", type_=Float), jobs.c.response_at),
            )
        )
        self.attempt_failed = (
            update(attempts)
            .where(attempts.c.id == bindparam("b_id"))
            .values(
                ended_at=bindparam("b_now"),
                http_status=bindparam("b_status"),
                error_kind=bindparam("b_kind"),
                message=bindparam("b_message"),
                in_doubt=bindparam("b_doubt"),
            )
        )
        ended: dict[str, Any] = {
            **unleased(bindparam("b_now")),
            "error_kind": bindparam("b_kind"),
            "error_message": bindparam("b_message"),
        }
        self.rescheduled = (
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(
                **ended,
                state=PENDING,
                next_attempt_at=bindparam("b_next"),
                # an attempt refused for the in-flight limit is given back (b_uncount = 1)
                attempts=jobs.c.attempts - bindparam("b_uncount", type_=BigInteger),
            )
        )
        self.failed = (
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(**ended, state=FAILED, finished_at=bindparam("b_now"))
        )


@cache
def statements(postgres: bool) -> Statements:
    """The prebuilt statements for PostgreSQL or (``postgres=False``) SQLite."""
    return Statements(postgres)
