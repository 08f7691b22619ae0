"""The loopback services tests use: PostgreSQL and RabbitMQ (see ../shared/SERVICES.md).

Without one, a test skips with the reason, unless ``VIDINFER_REQUIRE_SERVICES=1`` (CI), which
makes that a failure (``seaweed.missing_service``).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from seaweed import missing_service

PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    if not reachable(5432):
        missing_service("PostgreSQL is not running on 127.0.0.1:5432 (see ../shared/SERVICES.md)")
    import psycopg

    name = f"vidinfer_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://root@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
