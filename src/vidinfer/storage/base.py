"""The small contract every blob store meets.

Keys are ``/``-separated names such as ``uploads/acme/<id>/clip.mp4`` or
``results/acme/<job>.json``; the first two parts say whose object it is. Clients
never see a store's internals: they get signed URLs to PUT uploads and GET
results, and workers read and write through the store.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from vidinfer.errors import InvalidInput

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


def safe_name(file_name: str, default: str = "video") -> str:
    """A file name reduced to a harmless base name: no directories, no odd characters."""
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE.sub("_", base).strip("._")[:120]
    return base or default


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (``..``, absolute paths, empty parts)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise InvalidInput(f"invalid object key {key[:200]!r}", code="invalid_key")
    return key


def parse_s3_url(url: str, *, allow_empty_key: bool = False) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` as ``(bucket, key)``; the key is checked like a store key (no ``..``, no ``//``)."""
    if url[:5].lower() != "s3://":
        raise InvalidInput(f"not an s3:// URL: {url[:200]!r}", code="invalid_url")
    bucket, _, key = url[5:].partition("/")
    if not _BUCKET.match(bucket):
        raise InvalidInput(f"invalid bucket name in {url[:200]!r}", code="invalid_url")
    if "?" in key or "#" in key:
        raise InvalidInput(f"an s3:// URL takes no query or fragment: {url[:200]!r}", code="invalid_url")
    key = key.strip("/") if allow_empty_key else key
    if key or not allow_empty_key:
        check_key(key)
    return bucket, key


class BlobStore(Protocol):
    """Objects by key, and URLs signed for one method on one key until an expiry."""

    def sign_url(self, method: str, key: str, ttl: int) -> str:
        """An absolute URL a client may use with ``method`` on ``key`` for ``ttl`` seconds."""
        ...

    def key_from_url(self, url: str) -> str | None:
        """The key of one of this store's own URLs, else None (an external URL)."""
        ...

    def exists(self, key: str) -> bool: ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key``, atomically (readers never see half an object)."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def local_copy(self, key: str, max_bytes: int | None = None) -> AbstractContextManager[Path]:
        """A local file holding the object, for as long as the context lasts.

        Raises ``PayloadTooLarge`` (before copying anything) when the object is over ``max_bytes``.
        """
        ...

    def delete(self, key: str) -> None: ...
