"""A real ``vidinfer serve`` in a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Start, kill and restart a server over one data directory; make keys; call the API."""

    def __init__(self, data_dir: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                 debug: bool = False) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.debug = debug  # `vidinfer --debug serve`: debug logs into server.log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "VIDINFER_DATA_DIR": str(data_dir), "VIDINFER_URL_ALLOWLIST": "127.0.0.0/8",
                    "VIDINFER_SECRET_KEY": "test-secret", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vidinfer.cli", *(["--debug"] if self.debug else []), "serve", "--port",
                 str(self.port), "--workers",
                 str(self.workers)], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        """Stop the whole process group (server and workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------
    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "vidinfer.cli", *args], env=self.env, capture_output=True,
                             text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    def key(self, workspace: str = "acme") -> str:
        return self.cli("keys", "create", "--workspace", workspace)

    def upload(self, key: str, path: Path) -> str:
        url = httpx.post(f"{self.url}/video_upload_signed_url", params={"api_key": key},
                         json={"file_name": path.name}).json()["signed_url"]
        with open(path, "rb") as f:
            httpx.put(url, content=f.read(), headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        return url

    def submit(self, key: str, input_url: str, models: list[dict[str, Any]] | None = None, infer_fps: Any = 1,
               **extra: Any) -> httpx.Response:
        body = {"input_url": input_url, "infer_fps": infer_fps,
                "models": models or [{"model_id": "coco", "model_version": "1", "inference_type": "object-detection"}],
                **extra}
        return httpx.post(f"{self.url}/videoinfer", params={"api_key": key}, json=body, timeout=30)

    def status(self, key: str, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/videoinfer", params={"api_key": key, "job_id": job_id}, timeout=30)
        response.raise_for_status()
        return response.json()

    def wait_render(self, key: str, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Poll a job's render until it ends (its status shares the status rate limit: a 429 is not expected
        at this pace)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.url}/videoinfer/render", params={"api_key": key, "job_id": job_id}, timeout=30)
            r.raise_for_status()
            if r.json()["status"] != 1:
                return r.json()
            time.sleep(0.3)
        raise TimeoutError(self.log.read_text()[-3000:])

    def wait(self, key: str, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
        """Poll until the job ends, as a client should: a 429 waits its ``Retry-After`` (the status
        endpoint allows ``VIDINFER_STATUS_RATE_PER_MINUTE``, 120 by default, after a burst)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self.status(key, job_id)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 429:
                    raise
                time.sleep(float(exc.response.headers.get("Retry-After", "1")))
                continue
            if status["status"] != 1:
                return status
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still running after {timeout} s:\n{self.log.read_text()[-3000:]}")
