"""A ``vidinfer serve`` subprocess on a free loopback port, for the API benchmark.

The benchmark's own copy of what tests/server.py does (bench/ does not import
from tests/): start the server over a data directory, wait for ``/health``,
make keys with the CLI, upload a video, read the processes' memory, stop it all.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """``vidinfer serve`` with ``workers`` worker processes and extra ``env`` settings."""

    def __init__(self, data_dir: Path, *, workers: int, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir), "VIDINFER_WORKERS": str(workers), **env}
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> ApiServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vidinfer.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not answer /health in {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the process group (server and workers), SIGKILL what is left after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def key(self, workspace: str) -> str:
        out = subprocess.run([sys.executable, "-m", "vidinfer.cli", "keys", "create", "--workspace", workspace],
                             env=self.env, capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    def upload(self, key: str, path: Path) -> str:
        """Upload ``path`` once through the signed-URL calls; returns the URL to pass as ``input_url``."""
        response = httpx.post(f"{self.url}/video_upload_signed_url", params={"api_key": key},
                              json={"file_name": path.name}, timeout=30)
        response.raise_for_status()
        url = response.json()["signed_url"]
        httpx.put(url, content=path.read_bytes(), headers={"Content-Type": "application/octet-stream"},
                  timeout=60).raise_for_status()
        return url

    def rss_mb(self) -> dict[str, float]:
        """Resident memory now: the API process, and its children (the workers) together."""
        if self.proc is None or self.proc.poll() is not None:
            return {"server": 0.0, "children": 0.0}
        server = psutil.Process(self.proc.pid)
        children = 0
        for child in server.children(recursive=True):
            try:
                children += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return {"server": server.memory_info().rss / 2**20, "children": children / 2**20}

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far: the API process, and its children together."""
        server = psutil.Process(self.proc.pid) if self.proc is not None else None
        if server is None:
            return {"server": 0.0, "children": 0.0}
        children = 0.0
        for child in server.children(recursive=True):
            try:
                t = child.cpu_times()
                children += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        t = server.cpu_times()
        return {"server": t.user + t.system, "children": children}
