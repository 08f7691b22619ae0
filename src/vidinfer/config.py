"""Settings: the only place that reads the environment (prefix ``VIDINFER_``).

Entry points build one ``Settings`` and pass it down; nothing reads it at import.
"""

from __future__ import annotations

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
    #: decode threads per job (PyAV codec threads)
    decode_threads: int = 2
    #: frames per inference batch
    batch_size: int = 4
    #: ONNX Runtime intra-op threads (0: one per core)
    ort_threads: int = 0
    #: ONNX Runtime execution providers in order of preference; empty = CUDA if present, else CPU
    providers: str = ""
    #: largest video accepted by upload or URL fetch, in bytes
    max_upload_bytes: int = 5 * 1024**3
    #: seconds allowed for fetching an input URL
    fetch_timeout: float = 300.0

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "models.json"
