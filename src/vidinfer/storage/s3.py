"""Blobs in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, R2...), with presigned URLs.

Clients PUT uploads and GET results straight to and from the S3 server with SigV4
presigned URLs (``obstore.sign``); the API never carries the bytes. Configured by
``storage_url = s3://BUCKET/PREFIX`` and ``s3_endpoint`` / ``s3_access_key`` /
``s3_secret_key`` / ``s3_region``; a custom endpoint is addressed path-style
(``{endpoint}/{bucket}/{key}``), as SeaweedFS and MinIO expect.

The official roboflow SDK reads ``X-Goog-Expires`` out of the upload URL and crashes
without it, but a query parameter added to a presigned URL breaks its signature. So
the URL carries it in its *fragment* (``...&X-Amz-Signature=..#X-Goog-Date=..&X-Goog-Expires=3600``):
HTTP clients never send a fragment, and the SDK's ``split("&X-Goog-Expires")`` finds it.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import obstore
from obstore.exceptions import GenericError, NotFoundError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store as _ObS3Store

from vidinfer.errors import FetchError, NotFound, PayloadTooLarge, StorageError, Unavailable, VidinferError
from vidinfer.storage.base import check_key, parse_s3_url

if TYPE_CHECKING:
    from vidinfer.config import Settings

#: multipart part size for put_file (S3's minimum part is 5 MiB) and parts in flight at once
PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4
#: downloads stream in pieces of at least this many bytes
READ_CHUNK = 1024 * 1024
#: a whole request (a multi-GB GET included) may take this long; a stalled read fails sooner
CLIENT_OPTIONS = {"timeout": "1h", "read_timeout": "60s", "connect_timeout": "10s"}
#: how obstore words a server that is down or failing (after its own few retries, ~2 s when refused):
#: no connection, a timeout, a 5xx answer
_OUTAGE = re.compile(r"error sending request|connect|timed? ?out|status(?: code)?:? 5\d\d|\b50[234]\b", re.I)


def _aws_endpoint(region: str) -> str:
    return f"https://s3.{region}.amazonaws.com"


class S3Store:
    """Objects under ``prefix`` in ``bucket``; URLs presigned by the S3 server's own SigV4 scheme."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str = "", access_key: str = "",
                 secret_key: str = "", region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.endpoint = (endpoint or _aws_endpoint(region)).rstrip("/")
        config: dict[str, Any] = {"region": region, "virtual_hosted_style_request": False}
        if endpoint:
            config["endpoint"] = self.endpoint
        if access_key or secret_key:
            config.update(access_key_id=access_key, secret_access_key=secret_key)
        # without credentials obstore follows AWS's usual chain (AWS_* variables, instance role)
        client = {**CLIENT_OPTIONS, "allow_http": self.endpoint.startswith("http://")}
        self._store = _ObS3Store(bucket, prefix=self.prefix or None, client_options=client, **config)

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str | None = None) -> S3Store:
        """The store ``settings.storage_url`` names, or with ``bucket``: that whole bucket, same credentials."""
        prefix = ""
        if bucket is None:
            bucket, prefix = parse_s3_url(settings.storage_url, allow_empty_key=True)
        return cls(bucket, prefix, endpoint=settings.s3_endpoint, access_key=settings.s3_access_key,
                   secret_key=settings.s3_secret_key, region=settings.s3_region)

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint}/{self.bucket}/{self.prefix})"

    # -- signing ------------------------------------------------------------------
    def sign_url(self, method: str, key: str, ttl: int) -> str:
        check_key(key)
        with self._errors(key):
            url = obstore.sign(self._store, method.upper(), key, timedelta(seconds=ttl))  # type: ignore[arg-type]
        # for the roboflow SDK, which parses "&X-Goog-Expires=" out of the URL; never sent (a fragment)
        return f"{url}#X-Goog-Date={int(time.time())}&X-Goog-Expires={ttl}"

    @cached_property
    def _url_base(self) -> tuple[str, str, str]:
        """(scheme, host, path before the key) of this store's signed URLs, read off one it signs."""
        parts = urlsplit(self.sign_url("GET", "k", 60))
        return parts.scheme.lower(), parts.netloc.lower(), parts.path[:-1]

    def key_from_url(self, url: str) -> str | None:
        """The key of a URL this store presigned, or of ``s3://BUCKET/PREFIX/KEY``; else None."""
        if url[:5].lower() == "s3://":
            bucket, path = parse_s3_url(url)
            if bucket != self.bucket:
                return None
            if not self.prefix:
                return check_key(path)
            if not path.startswith(self.prefix + "/"):
                return None
            return check_key(path[len(self.prefix) + 1:])
        parts = urlsplit(url)
        scheme, host, head = self._url_base
        if (parts.scheme.lower(), parts.netloc.lower()) != (scheme, host) or not parts.path.startswith(head):
            return None
        return check_key(unquote(parts.path[len(head):]))

    # -- objects ------------------------------------------------------------------
    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """obstore's errors as vidinfer's: a missing object is NotFound, anything else StorageError."""
        try:
            yield
        except VidinferError:
            raise
        except (NotFoundError, FileNotFoundError):  # obstore raises the builtin for a missing object
            raise NotFound(f"no object {key}", code="object_not_found") from None
        except (PermissionDeniedError, UnauthenticatedError, PermissionError) as exc:
            raise StorageError(f"the S3 server refused access to {self.bucket}/{key}: {_first_line(exc)}",
                               code="storage_forbidden") from None
        except (GenericError, ConnectionError, TimeoutError) as exc:
            if not isinstance(exc, GenericError) or _OUTAGE.search(str(exc)):  # down or restarting: try later
                raise Unavailable(f"the object storage at {self.endpoint} is unreachable ({_first_line(exc)})",
                                  code="storage_unavailable") from None
            raise StorageError(f"S3 request for {self.bucket}/{key} failed: {_first_line(exc)}") from None
        except Exception as exc:  # obstore's other errors: network, server, configuration
            raise StorageError(f"S3 request for {self.bucket}/{key} failed: {_first_line(exc)}") from None

    def size(self, key: str) -> int:
        with self._errors(key):
            return int(obstore.head(self._store, check_key(key))["size"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def put_file(self, key: str, path: Path) -> None:
        """Streamed from disk; multipart above ``PART_SIZE``. S3 shows the object only once complete."""
        with self._errors(check_key(key)):
            obstore.put(self._store, key, Path(path), chunk_size=PART_SIZE, max_concurrency=PARTS_IN_FLIGHT)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(check_key(key)):
            obstore.put(self._store, key, data, use_multipart=False)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(check_key(key)):
            return bytes(obstore.get(self._store, key).bytes())

    @contextmanager
    def local_copy(self, key: str, max_bytes: int | None = None) -> Iterator[Path]:
        """The object downloaded piece by piece to a temporary file, removed when the context ends."""
        check_key(key)
        with tempfile.TemporaryDirectory(prefix="vidinfer-s3-") as tmp:
            path = Path(tmp) / (key.rsplit("/", 1)[-1] or "object")
            with self._errors(key):
                result = obstore.get(self._store, key)
                size = int(result.meta["size"])
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(f"the object {key} is {size} bytes; the limit is {max_bytes}",
                                          code="input_too_large")
                written = 0
                with open(path, "wb") as out:
                    for chunk in result.stream(min_chunk_size=READ_CHUNK):
                        written += len(chunk)
                        out.write(chunk)
            if written != size:
                raise StorageError(f"downloaded {written} of {size} bytes of {key}", code="short_read")
            yield path

    def delete(self, key: str) -> None:
        with self._errors(check_key(key)):
            obstore.delete(self._store, key)


@contextmanager
def s3_url_copy(url: str, settings: Settings, max_bytes: int | None = None) -> Iterator[Path]:
    """A local copy of ``s3://BUCKET/KEY``, read with the configured S3 endpoint and credentials."""
    bucket, key = parse_s3_url(url)
    with ExitStack() as stack:
        try:
            path = stack.enter_context(S3Store.from_settings(settings, bucket=bucket).local_copy(key, max_bytes))
        except (NotFound, StorageError) as exc:
            raise FetchError(f"cannot read {url[:300]}: {exc.message}", code="s3_unreachable") from None
        yield path

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
