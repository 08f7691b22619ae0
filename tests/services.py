"""The loopback services tests use: PostgreSQL and RabbitMQ (see ../shared/SERVICES.md).

Without one, a test skips with the reason, unless ``VIDINFER_REQUIRE_SERVICES=1`` (CI), which
makes that a failure (``seaweed.missing_service``).

The shared servers on 5432 and 5672 serve other people's tests too and are never restarted.
A test that restarts its database or broker starts a private one instead: ``PrivatePostgres``
(a cluster of its own, ``initdb`` as the ``postgres`` user) and ``PrivateRabbit`` (a node of its
own, on free ports); both restart on the same port and data, as an operator's restart would.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from seaweed import free_ports, missing_service

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


def _as_user(user: str) -> list[str]:
    """A command prefix that runs as ``user`` when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian's layout), or ones on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _wait(ready: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


class PrivatePostgres:
    """A PostgreSQL cluster of our own on a free loopback port (trust auth), to stop and restart at will."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="vidinfer-pg-"))
        self.data = self.folder / "data"
        self.port = free_ports(1)[0]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        subprocess.run([*_as_user("postgres"), str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "--no-sync"], check=True, capture_output=True, timeout=120)

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*_as_user("postgres"), str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                        "-l", str(self.data / "log"), "-w", "-t", "60", *args],
                       check=True, capture_output=True, timeout=90)

    def start(self) -> PrivatePostgres:
        self._ctl("start")
        return self

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a restart of the server."""
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def running(self) -> bool:
        return reachable(self.port)

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


class PrivateRabbit:
    """A RabbitMQ node of our own (its own name, ports, data and no plugins) beside the shared one."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="vidinfer-mq-"))
        self.port, dist = free_ports(2)
        self.node = f"vidinfer-{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (self.folder / "plugins").write_text("[].\n")
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.folder / "rabbitmq-env.conf").write_text("")  # not the system's, which names the shared node
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_DIST_PORT": str(dist),
                    "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"), "RABBITMQ_LOG_BASE": str(self.folder / "log"),
                    "RABBITMQ_PID_FILE": str(self.folder / "node.pid"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "plugins"),
                    "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
                    "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
                    "ERL_EPMD_ADDRESS": "127.0.0.1"}
        if os.geteuid() == 0 and _has_user("rabbitmq"):
            shutil.chown(self.folder, "rabbitmq")
            for child in self.folder.iterdir():
                shutil.chown(child, "rabbitmq")

    def start(self, timeout: float = 90.0) -> PrivateRabbit:
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, capture_output=True, timeout=60)
        _wait(lambda: reachable(self.port), timeout, f"RabbitMQ node {self.node}")
        return self

    def stop(self) -> None:
        """``rabbitmqctl stop``: the node closes its connections; durable queues and persistent messages stay."""
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env, capture_output=True, timeout=60)
        _wait(lambda: not reachable(self.port), 30, f"RabbitMQ node {self.node} to stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return reachable(self.port)

    def close(self) -> None:
        if reachable(self.port):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this module's own, which its tests may stop and restart."""
    bindir = postgres_bin()
    if bindir is None:
        missing_service("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    server = PrivatePostgres(bindir).start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this module's own, which its tests may stop and restart."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        missing_service("RabbitMQ's server (rabbitmq-server, rabbitmqctl) is not installed")
    node = PrivateRabbit().start()
    try:
        yield node
    finally:
        node.close()
