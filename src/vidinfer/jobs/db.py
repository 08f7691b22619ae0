"""The job store's tables and engine: SQLite by default, PostgreSQL at scale.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions and a busy
timeout: measured here, WAL alone lost read-modify-write updates between
processes without an error, while immediate transactions lost none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import InterfaceError, OperationalError

from vidinfer.errors import StorageFull, Unavailable

metadata = MetaData()

workspaces = Table(
    "workspaces", metadata,
    Column("name", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    # SHA-256 of the key: keys are long random tokens, so a plain hash is enough and lookups stay indexed
    Column("key_hash", String(64), primary_key=True),
    Column("workspace", String(64), nullable=False, index=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

jobs = Table(
    "jobs", metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("failure", String(32)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("input_url", Text, nullable=False),
    Column("infer_fps", String(32), nullable=False),
    Column("models", Text, nullable=False),  # JSON list of model requests, or {"models": [...], "options": {...}}
    Column("notify_url", Text),
    Column("idempotency_key", String(255)),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("updated_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", String(64)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("frames_done", Integer, nullable=False, default=0),
    Column("frames_total", Integer),
    Column("result_key", Text),
    Column("stats", Text),  # JSON: frames, null frames, warnings
    UniqueConstraint("workspace", "idempotency_key", name="uq_jobs_idempotency"),
)

#: the chunks of a job split across workers (distributed mode): each chunk's own progress, so a
#: redelivered chunk overwrites rather than adds, and the merge starts once every chunk is done
job_chunks = Table(
    "job_chunks", metadata,
    Column("job_id", String(32), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("k_first", Integer, nullable=False),
    Column("k_stop", Integer, nullable=False),
    Column("frames_done", Integer, nullable=False, default=0),
    Column("done", Boolean, nullable=False, default=False),
    Column("runs", Integer, nullable=False, default=0),  # deliveries that started it (at least once)
    Column("stats", Text),
)


#: the execution option of the job store's read-only connections (SQLite: no write lock taken)
READ_ONLY = "vidinfer_read_only"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings each backend needs; creates the tables."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "isolation_level": None})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        event.listen(engine, "handle_error", _sqlite_full)
    else:
        if url.startswith(("postgresql://", "postgres://")):  # the driver vidinfer installs: psycopg 3
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        # pre-ping: a connection the server dropped (a restart) is replaced before use, not failed on
        engine = create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        event.listen(engine, "handle_error", _unavailable)
    metadata.create_all(engine)
    return engine


def _unavailable(context: ExceptionContext) -> None:
    """A server that cannot be reached or dropped the connection (down, restarting, failing over) raises
    ``Unavailable``: the API answers 503 and workers wait and retry, where a bug would fail the job.

    Left alone: the pool's pre-ping (its failure just means "reconnect") and every other error."""
    if context.is_pre_ping:
        return
    original = context.original_exception
    if context.is_disconnect or isinstance(context.sqlalchemy_exception, (OperationalError, InterfaceError)):
        first = (str(original).strip().splitlines() or [type(original).__name__])[0][:300]
        raise Unavailable(f"the job database is unreachable ({first}); try again shortly",
                          code="database_unavailable") from original


def _sqlite_full(context: ExceptionContext) -> None:
    """SQLite on a full disk ("database or disk is full", SQLITE_FULL) raises ``StorageFull``: the API
    answers 507 with what to do instead of a 500, and a worker waits for space to record its job's end."""
    if "database or disk is full" in str(context.original_exception):
        raise StorageFull("the job database cannot be written: the server's storage is full; free space on "
                          "the server, then try again", code="storage_full") from context.original_exception


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # A read (one SELECT, on a connection with READ_ONLY) sees a WAL snapshot and needs no lock: with
    # BEGIN IMMEDIATE every status poll would queue for the one write lock behind every other poll and write.
    if not conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
