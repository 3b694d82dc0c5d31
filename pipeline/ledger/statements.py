"""The statements of the ledger's hot paths (claim, attempt, answer, complete, settle), built once.

Building a SQLAlchemy statement and computing its cache key costs more
Python time than running it on SQLite: a worker that claims and completes
thousands of jobs a second cannot afford to rebuild a dozen statements per
batch. These take every value as a bound parameter instead; the repository
passes the values. Parameters are named ``b_*`` so that they never clash with
the column names SQLAlchemy reserves in ``UPDATE ... SET``.

Lists of ids are one array parameter on PostgreSQL (``id = ANY($1)``), so the
SQL text, and with it asyncpg's prepared statement, is the same for every
batch size; SQLite expands them into ``IN (?, ?, ...)``.

A job's lease is checked as ``lease_owner = :owner`` alone: every verb clears
the owner when a job leaves `running`, so the owner implies the state, and
without a ``state`` test PostgreSQL's planner is not tempted by the state
index, whose entries for `running` are mostly dead under a busy run.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    any_,
    bindparam,
    case,
    false,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect

from pipeline.ledger.tables import FAILED, PENDING, RUNNING, Id, attempts, images, jobs, manifests

#: the columns a planned job is inserted with, in the order of `job_insert_sql`'s values
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
    "parent_id",
    "state",
    "attempts",
    "next_attempt_at",
    "estimate_micros",
    "reserved_micros",
    "cost_micros",
    "created_at",
    "updated_at",
)


def job_insert_sql(dialect: Dialect) -> str:
    """``INSERT`` of one job row, skipping keys the manifest already has, as driver SQL.

    Planning inserts a million rows: handed to the driver's ``executemany`` as
    tuples, they skip SQLAlchemy's per-row parameter processing (some 20 us a
    row, as much again as the expansion that produces the row).
    """
    quote = dialect.identifier_preparer.quote
    if dialect.name == "postgresql":
        marks = ", ".join(f"${n}" for n in range(1, len(JOB_COLUMNS) + 1))
    else:
        marks = ", ".join("?" for _ in JOB_COLUMNS)
    return (
        f"INSERT INTO {quote(jobs.name)} ({', '.join(quote(c) for c in JOB_COLUMNS)}) VALUES ({marks}) "
        f"ON CONFLICT ({quote('manifest_id')}, {quote('key')}) DO NOTHING"
    )


#: the columns a claim hands to the worker
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
)


class Statements:
    """One backend's prebuilt statements (PostgreSQL's lock rows; SQLite's BEGIN IMMEDIATE already does)."""

    def __init__(self, postgres: bool) -> None:
        row_locks = postgres

        def among(column: ColumnElement[int]) -> ColumnElement[bool]:
            """``column`` is one of the ids in parameter ``b_ids``."""
            if postgres:
                return column == any_(bindparam("b_ids", type_=ARRAY(BigInteger())))
            return column.in_(bindparam("b_ids", expanding=True))

        leased = jobs.c.lease_owner == bindparam("b_owner")
        # --- claim
        due = (
            select(jobs.c.id, jobs.c.estimate_micros, jobs.c.response_at)
            .where(
                jobs.c.manifest_id == bindparam("b_manifest"),
                jobs.c.state == PENDING,
                jobs.c.next_attempt_at <= bindparam("b_now", type_=Float),
            )
            .order_by(jobs.c.rank, jobs.c.id)
            .limit(bindparam("b_limit", type_=BigInteger))
        )
        self.due = due.with_for_update(skip_locked=True) if row_locks else due
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
        self.new_attempts = (
            insert(attempts)
            .from_select(
                ["job_id", "run_id", "number", "started_at", "sent", "in_doubt"],
                select(
                    jobs.c.id,
                    bindparam("b_run", type_=Id),
                    jobs.c.attempts + 1,
                    bindparam("b_now", type_=Float),
                    true(),
                    false(),
                ).where(among(jobs.c.id), leased),
            )
            .returning(attempts.c.id, attempts.c.job_id)
        )
        self.count_attempts = (
            update(jobs)
            .where(among(jobs.c.id))
            .values(attempts=jobs.c.attempts + 1, updated_at=bindparam("b_now"))
        )
        # answers and completions mostly share their values: one statement per distinct value set
        self.answered = (
            update(attempts)
            .where(among(attempts.c.id))
            .values(ended_at=bindparam("b_now"), http_status=bindparam("b_status"))
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
        self.downloaded = (
            update(images)
            .where(images.c.job_id == bindparam("b_job"), images.c.index == bindparam("b_index"))
            .values(
                state=bindparam("b_state"),
                local_path=bindparam("b_path"),
                sha256=bindparam("b_sha"),
                bytes=bindparam("b_bytes"),
                width=bindparam("b_width"),
                height=bindparam("b_height"),
                error=bindparam("b_error"),
            )
        )
        self.finished = (
            update(jobs)
            .where(among(jobs.c.id))
            .values(
                state=bindparam("b_state"),
                lease_owner=None,
                lease_expires_at=None,
                reserved_micros=0,
                finished_at=bindparam("b_now"),
                updated_at=bindparam("b_now"),
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
        unleased: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "reserved_micros": 0,
            "updated_at": bindparam("b_now"),
            "error_kind": bindparam("b_kind"),
            "error_message": bindparam("b_message"),
        }
        self.rescheduled = (
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(**unleased, state=PENDING, next_attempt_at=bindparam("b_next"))
        )
        self.failed = (
            update(jobs)
            .where(jobs.c.id == bindparam("b_id"))
            .values(**unleased, state=FAILED, finished_at=bindparam("b_now"))
        )


@cache
def statements(postgres: bool) -> Statements:
    """The prebuilt statements for PostgreSQL or (``postgres=False``) SQLite."""
    return Statements(postgres)
