"""Blobs as files under one directory, with HMAC-signed URLs served by the API.

A URL is ``{public_url}/blobs/{key}?X-Goog-Date=..&X-Goog-Expires=..&X-Goog-Signature=..``:
the ``X-Goog-*`` names are what existing clients of the hosted API parse (the
official SDK reads ``X-Goog-Expires`` from the upload URL). The signature is an
HMAC-SHA256 over the method, the key and the expiry time, so a URL works for one
method on one object until it expires, and any change to it is refused.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote, urlencode, urlsplit

from vidinfer.errors import Forbidden, NotFound, PayloadTooLarge, StorageError, StorageFull
from vidinfer.storage.base import check_key

URL_PREFIX = "/blobs/"
#: what a full disk (or a user's exhausted quota) says
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(key: str, exc: OSError) -> StorageError:
    """An ``OSError`` while writing ``key`` as vidinfer's error: ``StorageFull`` for a full disk."""
    if exc.errno in FULL:
        return StorageFull(f"cannot store {key}: the server's storage is full; free space on the server, "
                           "then try again", code="storage_full")
    return StorageError(f"cannot store {key}: {exc.strerror or exc}")


class LocalStore:
    """Files under ``root``; URLs on ``public_url`` signed with ``secret``. Writes that would leave less
    than ``min_free_bytes`` free on the disk are refused with ``StorageFull`` (room kept for the database)."""

    def __init__(self, root: Path, secret: bytes, public_url: str, *, min_free_bytes: int = 0) -> None:
        self.root = root
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.min_free_bytes = min_free_bytes

    def check_space(self, incoming: int, key: str = "the upload") -> None:
        """Raise ``StorageFull`` unless ``incoming`` more bytes leave ``min_free_bytes`` free."""
        root = self.root if self.root.exists() else self.root.parent
        free = shutil.disk_usage(root).free
        if free - incoming < self.min_free_bytes:
            raise StorageFull(
                f"cannot store {key}: the server's storage is full ({free / 2**20:.1f} MiB free, "
                f"{self.min_free_bytes / 2**20:.0f} MiB kept in reserve); free space on the server, then try again",
                code="storage_full")

    # -- signing ------------------------------------------------------------------
    def _signature(self, method: str, key: str, expires_at: int) -> str:
        message = f"{method.upper()}\n{key}\n{expires_at}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def sign_url(self, method: str, key: str, ttl: int) -> str:
        check_key(key)
        issued = int(time.time())
        query = urlencode({
            "X-Goog-Date": issued,
            "X-Goog-Expires": ttl,
            "X-Goog-Signature": self._signature(method, key, issued + ttl),
        })
        return f"{self.public_url}{URL_PREFIX}{quote(key)}?{query}"

    def verify(self, method: str, key: str, params: Mapping[str, str]) -> None:
        """Raise ``Forbidden`` unless ``params`` sign ``method`` on ``key`` and have not expired."""
        try:
            issued = int(params["X-Goog-Date"])
            ttl = int(params["X-Goog-Expires"])
            signature = params["X-Goog-Signature"]
        except (KeyError, ValueError):
            raise Forbidden("this URL is not signed", code="unsigned_url") from None
        expected = self._signature(method, key, issued + ttl)
        if not hmac.compare_digest(expected, signature):
            raise Forbidden("the URL's signature does not match (tampered, or signed for another method "
                            "or object)", code="bad_signature")
        if time.time() > issued + ttl:
            raise Forbidden("this URL has expired; ask for a new one", code="url_expired")

    def key_from_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        base = urlsplit(self.public_url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            return None
        prefix = base.path.rstrip("/") + URL_PREFIX
        if not parts.path.startswith(prefix):
            return None
        return check_key(unquote(parts.path[len(prefix):]))

    # -- objects ------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put_file(self, key: str, path: Path) -> None:
        dest = self.path(key)
        self.check_space(path.stat().st_size, key)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise storage_error(key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self.path(key)
        self.check_space(len(data), key)
        tmp = ""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
            raise storage_error(key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {key}", code="object_not_found") from None

    @contextmanager
    def local_copy(self, key: str, max_bytes: int | None = None) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise NotFound(f"no object {key}", code="object_not_found")
        if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
            raise PayloadTooLarge(f"the object {key} is {size} bytes; the limit is {max_bytes}",
                                  code="input_too_large")
        yield path

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def open_upload(self, key: str, size: int = 0) -> tuple[Path, Path]:
        """(temporary file to stream into, final path): the caller renames when complete. Refused with
        ``StorageFull`` when ``size`` announced bytes would not fit."""
        dest = self.path(key)
        self.check_space(size, key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        except OSError as exc:
            raise storage_error(key, exc) from exc
        os.close(fd)
        return Path(tmp), dest
