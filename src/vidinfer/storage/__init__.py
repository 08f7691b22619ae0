"""Where videos and results live: a ``BlobStore`` with signed URLs."""

from __future__ import annotations

from vidinfer.config import Settings
from vidinfer.storage.base import BlobStore


def open_store(settings: Settings) -> BlobStore:
    """The blob store the settings name: local files under the data directory."""
    from vidinfer.storage.local import LocalStore

    return LocalStore(settings.data_dir / "blobs", settings.secret(), settings.public_url)
