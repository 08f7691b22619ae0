"""Where videos and results live: a ``BlobStore`` with signed URLs."""

from __future__ import annotations

from vidinfer.config import Settings
from vidinfer.storage.base import BlobStore


def open_store(settings: Settings) -> BlobStore:
    """The blob store the settings name: an S3 bucket for ``storage_url = s3://BUCKET/PREFIX``,
    else local files under the data directory (URLs served by the API on ``public_url``)."""
    if settings.storage_url[:5].lower() == "s3://":
        from vidinfer.storage.s3 import S3Store

        return S3Store.from_settings(settings)
    if settings.storage_url:
        from vidinfer.errors import InvalidInput

        raise InvalidInput(f"storage_url must be empty (local files) or s3://BUCKET/PREFIX, got "
                           f"{settings.storage_url[:200]!r}", code="invalid_setting")
    from vidinfer.storage.local import LocalStore

    return LocalStore(settings.data_dir / "blobs", settings.secret(), settings.public_url,
                      min_free_bytes=int(settings.min_free_mb * 2**20))
