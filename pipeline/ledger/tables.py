"""The ledger's schema (SPEC §5), as SQLAlchemy Core tables; Alembic migrates it.

Times are unix seconds (float) and money is integer micro-dollars, so both
backends compare and add them exactly and alike.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pipeline.jobs import JobState

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: 64-bit ids on PostgreSQL; SQLite's INTEGER PRIMARY KEY is already 64-bit (and a rowid).
Id = BigInteger().with_variant(Integer(), "sqlite")

#: job states (`pipeline.jobs.JobState`), as the text the tables hold
PENDING = JobState.PENDING.value
RUNNING = JobState.RUNNING.value
SUCCEEDED = JobState.SUCCEEDED.value
FAILED = JobState.FAILED.value
WITHDRAWN = JobState.WITHDRAWN.value
JOB_STATES = tuple(state.value for state in JobState)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("sha256", String(64), nullable=False),
    Column("path", Text, nullable=True),
    Column("base_dir", Text, nullable=False),
    # everything a worker needs to execute the jobs without the manifest file:
    # provider kind, base_url, the *name* of the key variable, output, limits, stages
    Column("config", Text, nullable=False),
    Column("planned_at", Float, nullable=False),
    Column("plan_complete", Boolean, nullable=False, default=False),
    Column("budget_micros", BigInteger, nullable=True),
    Column("spent_micros", BigInteger, nullable=False, default=0),
    Column("reserved_micros", BigInteger, nullable=False, default=0),
    Column("lock_owner", String(128), nullable=True),
    Column("lock_expires_at", Float, nullable=True),
    # the number of the latest plan begun (migration 0005): each re-plan counts one up
    Column("plan_seq", Integer, nullable=False, default=0, server_default="0"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("manifest_id", Id, ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("op", String(32), nullable=False),
    Column("stage", String(64), nullable=False),
    Column("rank", BigInteger, nullable=False),
    Column("replica", Integer, nullable=False, default=0),
    Column("request", Text, nullable=False),
    Column("model", String(32), nullable=True),
    Column("num_images", Integer, nullable=False, default=1),
    Column("source", Text, nullable=True),
    Column("source_sha256", String(64), nullable=True),
    Column("source_id", Text, nullable=True),
    # files besides the main image (mask, references): JSON [{role, location, sha256}], or NULL
    Column("inputs", Text, nullable=True),
    Column("parent_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True),
    Column("state", String(16), nullable=False, default=PENDING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False, default=0.0),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("estimate_micros", BigInteger, nullable=False, default=0),
    Column("reserved_micros", BigInteger, nullable=False, default=0),
    Column("cost_micros", BigInteger, nullable=False, default=0),
    Column("response_at", Float, nullable=True),
    Column("error_kind", String(32), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    # the plan that last had this job (`manifests.plan_seq`); NULL for jobs no plan makes
    # (chained children, rerolls), which a plan never withdraws (migration 0005)
    Column("plan_seq", Integer, nullable=True),
    UniqueConstraint("manifest_id", "key"),
    Index(None, "manifest_id", "state", "rank", "id"),
    Index(None, "state", "lease_expires_at"),
    Index(None, "parent_id"),
    # the review's rate: jobs of a manifest finished in the last minute (migration 0003)
    Index(None, "manifest_id", "finished_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("run_id", Id, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    Column("number", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("sent", Boolean, nullable=False, default=False),
    Column("http_status", Integer, nullable=True),
    Column("error_kind", String(32), nullable=True),
    Column("message", Text, nullable=True),
    Column("in_doubt", Boolean, nullable=False, default=False),
    Index(None, "job_id"),
    Index(None, "run_id"),
)

images = Table(
    "images",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("index", Integer, nullable=False),
    Column("remote_url", Text, nullable=True),
    Column("prompt", Text, nullable=True),
    Column("resolution", String(32), nullable=True),
    Column("seed", BigInteger, nullable=True),
    Column("is_image_safe", Boolean, nullable=False, default=True),
    Column("style_type", String(32), nullable=True),
    Column("state", String(16), nullable=False),
    Column("local_path", Text, nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("error", Text, nullable=True),
    UniqueConstraint("job_id", "index"),
    # images by state without reading the (wide) image rows, for the review (migration 0003)
    Index(None, "job_id", "state"),
)

descriptions = Table(
    "descriptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("index", Integer, nullable=False),
    Column("text", Text, nullable=False),
    UniqueConstraint("job_id", "index"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("owner", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("manifest_id", Id, ForeignKey("manifests.id", ondelete="SET NULL"), nullable=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("summary", Text, nullable=True),
)

#: a provider account (its base URL and the *name* of its key variable) whose cap on images
#: in flight every process of this ledger shares (SPEC §11)
accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("base_url", Text, nullable=False),
    Column("key_env", String(128), nullable=False),
    # the configured cap (`limits.concurrency`, the last one a run set) and the cap learned
    # from the provider's 429s (NULL: none learned)
    Column("cap", Integer, nullable=False),
    Column("learned_cap", Integer, nullable=True),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("base_url", "key_env"),
)

#: images in flight: a job's call holds `images` places of its account until it ends, or until
#: the hold's lease runs out (a dead process's places come back)
slot_holds = Table(
    "slot_holds",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("job_id", Id, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("images", Integer, nullable=False),
    Column("granted_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("account_id", "job_id"),
    Index(None, "owner"),
)

#: calls waiting for places, served oldest first across every process
slot_waiters = Table(
    "slot_waiters",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("job_id", Id, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("images", Integer, nullable=False),
    Column("since", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    UniqueConstraint("account_id", "job_id"),
    Index(None, "account_id", "since"),
    Index(None, "owner"),
)

#: a person's verdict on an image (`ideobatch serve`); no row: not reviewed yet
PICKED = "picked"
REJECTED = "rejected"
VERDICTS = (PICKED, REJECTED)

picks = Table(
    "picks",
    metadata,
    Column("image_id", Id, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("verdict", String(16), nullable=False),
    Column("decided_at", Float, nullable=False),
    # the job `ideobatch reroll` made to replace a rejected image (so it is made once)
    Column("reroll_job_id", Id, ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
    Index(None, "verdict"),
)
