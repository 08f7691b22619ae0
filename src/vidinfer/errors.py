"""The one error hierarchy of vidinfer.

Every error a user can cause or act on is a ``VidinferError``. Each class knows
its HTTP status (the API maps it in one handler), its CLI exit code and a stable
machine-readable ``code``; instances may override the code with a finer one.

    VidinferError
     ├── InvalidInput        400  bad arguments, out-of-range infer_fps, a model the server cannot run
     │    │                       (refused at submit with ModelError's codes: unknown_model, ...), ...
     │    ├── PayloadTooLarge 413
     │    └── IdempotencyConflict 422  an Idempotency-Key reused with another request
     ├── Unauthorized        401  missing or wrong API key
     ├── Forbidden           403  bad or expired signature
     ├── NotFound            404  unknown job, model, file
     ├── RateLimited         429
     ├── DecodeError         422  not a video, no video stream, corrupt data
     ├── FetchError          422  an input URL that cannot be fetched
     ├── ModelError          422  unknown model, unsupported ONNX layout
     ├── Cancelled           409  the job was cancelled while running
     ├── StorageError        500  the blob store failed
     │    └── StorageFull    507  the data directory is (nearly) full: free space, then retry
     └── Unavailable         503  a service vidinfer needs (database, broker, object storage)
                                  cannot be reached: transient, try again
"""

from __future__ import annotations


class VidinferError(Exception):
    """Root of all errors vidinfer raises on purpose."""

    status_code: int = 500
    code: str = "internal_error"
    exit_code: int = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        """The JSON body the API returns: ``{"code", "message"}``."""
        return {"code": self.code, "message": self.message}


class InvalidInput(VidinferError):
    status_code = 400
    code = "invalid_input"
    exit_code = 2


class PayloadTooLarge(InvalidInput):
    status_code = 413
    code = "payload_too_large"


class IdempotencyConflict(InvalidInput):
    """An ``Idempotency-Key`` already used for a different request: returning the first job would
    silently drop this one, so it is refused (as payment APIs do)."""

    status_code = 422
    code = "idempotency_key_reused"


class Unauthorized(VidinferError):
    status_code = 401
    code = "unauthorized"
    exit_code = 2


class Forbidden(VidinferError):
    status_code = 403
    code = "forbidden"
    exit_code = 2


class NotFound(VidinferError):
    status_code = 404
    code = "not_found"
    exit_code = 2


class RateLimited(VidinferError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class DecodeError(VidinferError):
    status_code = 422
    code = "decode_error"
    exit_code = 4


class FetchError(VidinferError):
    status_code = 422
    code = "fetch_error"
    exit_code = 4


class ModelError(VidinferError):
    status_code = 422
    code = "model_error"
    exit_code = 5


class Cancelled(VidinferError):
    status_code = 409
    code = "cancelled"
    exit_code = 130


class StorageError(VidinferError):
    status_code = 500
    code = "storage_error"
    exit_code = 6


class StorageFull(StorageError):
    """No room left in the data directory (below ``VIDINFER_MIN_FREE_MB``, or the disk said ENOSPC): the
    operator must free space. Uploads are refused with 507 and a job that cannot store its results fails
    with ``storage_full``; nothing half-written is kept."""

    status_code = 507
    code = "storage_full"


class Unavailable(VidinferError):
    """A service is down or restarting (``database_unavailable``, ``broker_unavailable``,
    ``storage_unavailable``): the same call may well succeed in a few seconds, so workers wait and
    retry instead of failing the job, and the API answers 503 with ``Retry-After``."""

    status_code = 503
    code = "service_unavailable"
    exit_code = 7
    retry_after = 5


#: Exit code of ``vidinfer infer`` when results were written but part of the
#: video could not be decoded or some frames failed inference.
EXIT_PARTIAL = 3
