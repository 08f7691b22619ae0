"""Settings: the only place that reads the environment (prefix ``VIDINFER_``).

Entry points build one ``Settings`` and pass it down; nothing reads it at import.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "vidinfer"


class Settings(BaseSettings):
    """Everything configurable, with the embedded single-machine defaults."""

    model_config = SettingsConfigDict(env_prefix="VIDINFER_", extra="ignore")

    #: where the embedded mode keeps its database, uploads, results and model registry
    data_dir: Path = Field(default_factory=_default_data_dir)
    #: decode threads per job (PyAV codec threads); 0: one fewer than the cores for inference
    #: jobs (the models run beside the decoder), every core for renders
    decode_threads: int = 0
    #: frames per inference batch
    batch_size: int = 4
    #: ONNX Runtime intra-op threads per run (0: half the cores; the pipeline runs two batches at once)
    ort_threads: int = 0
    #: ONNX Runtime execution providers in order of preference; empty = CUDA if present, else CPU
    providers: str = ""
    #: the CLIP ONNX export (a folder) that the model name ``clip`` runs (README: "CLIP")
    clip_dir: Path | None = None
    #: largest video accepted by upload or URL fetch, in bytes
    max_upload_bytes: int = 5 * 1024**3
    #: seconds allowed for fetching an input URL, in all: connect, headers and body, every redirect
    fetch_timeout: float = 300.0
    #: an input URL fetch that receives fewer bytes/s than this over a window of ``fetch_rate_window``
    #: seconds fails (0: off); far below any real link, it frees a worker from a stalled or dripping server
    fetch_min_rate: float = 1024.0
    fetch_rate_window: float = 30.0

    # -- the service ---------------------------------------------------------------
    #: the base URL clients reach this server at; signed URLs are built on it
    #: (empty: http://HOST:PORT of ``vidinfer serve``)
    public_url: str = ""
    #: SQLAlchemy URL of the job store (empty: SQLite in the data directory)
    database_url: str = ""
    #: worker processes of ``vidinfer serve`` (each keeps its models loaded)
    workers: int = 1
    #: secret for signing URLs and webhooks (empty: generated once, kept in the data directory)
    secret_key: str = ""
    #: lifetime of upload URLs and of results URLs, in seconds
    upload_url_ttl: int = 3600
    results_url_ttl: int = 7 * 24 * 3600
    #: hosts or CIDRs that input_url and notify_url may reach although private (comma-separated)
    url_allowlist: str = ""
    #: status calls allowed per API key per minute (bursts up to this many)
    status_rate_per_minute: int = 120
    #: seconds the API remembers a valid key (0: reads it every call); a key revoked by the CLI stops
    #: working within this long, one revoked through the API process's own store at once
    key_cache_ttl: float = Field(default=1.0, ge=0, le=60)
    #: attempts a job gets when the worker running it dies, before it fails
    max_attempts: int = 3
    #: free space (MiB) the data directory keeps: an upload that would eat into it is refused (507), a
    #: job whose results would fails with ``storage_full``; so the job database always has room
    min_free_mb: float = 64.0

    # -- scale-out (README: "Several machines") ----------------------------------------
    #: Celery broker (amqp://user:pass@host:5672//); empty: the embedded worker pool
    broker_url: str = ""
    #: where blobs live: empty for local files in the data directory, or s3://BUCKET/PREFIX
    storage_url: str = ""
    #: S3-compatible endpoint (empty: AWS), credentials and region for an s3:// storage_url
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    #: seconds of video per chunk when a job is split across workers (distributed mode)
    chunk_seconds: float = 120.0
    #: the broker queue the API and workers share (deployments sharing a broker use different ones)
    queue: str = "vidinfer"
    #: a job still queued this many seconds after it was saved is sent to the broker again (the API
    #: checks every half of it): covers a broker that was down at submit and an API killed mid-submit
    redispatch_seconds: float = 30.0
    #: how long a worker keeps retrying while the object storage is unreachable before the job fails
    #: with ``storage_unavailable``; while the database or the broker is down it waits for them
    outage_seconds: float = 300.0
    #: a running distributed job whose started chunk (or merge) writes nothing for this many seconds fails
    #: with ``worker_lost`` (its worker hangs); keep it well above a batch's time. Checked by the API's sweep
    stall_seconds: float = 600.0

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "models.json"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'vidinfer.db'}"

    def secret(self) -> bytes:
        """The signing secret: the setting, else a random one made once and kept in the data directory."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)  # first writer wins when several processes start at once
            except FileExistsError:
                pass
            tmp.unlink(missing_ok=True)
        return path.read_text().strip().encode()
