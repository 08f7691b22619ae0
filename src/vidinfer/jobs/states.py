"""Job states and the wire ``status`` codes clients see.

The hosted API's ``status`` is 0 when done, 1 while queued or running, and 2 or
more when failed. vidinfer gives each kind of failure its own code, so a client
can tell "fix your request" from "try again later" without parsing messages.
"""

from __future__ import annotations

from enum import Enum

from vidinfer import errors


class JobState(str, Enum):
    QUEUED = "queued"  # accepted, waiting for a worker
    RUNNING = "running"  # a worker holds it (see ``attempts``)
    DONE = "done"  # results written; ``result_key`` points at them
    FAILED = "failed"  # ended with ``error_code`` / ``error_message``
    CANCELLED = "cancelled"  # stopped on the user's request

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


STATUS_DONE = 0
STATUS_RUNNING = 1

#: failure status codes, one per kind of failure (documented in the README)
FAILURE_STATUS: dict[str, int] = {
    "internal_error": 2,  # a bug or an unexpected fault: report it
    "invalid_request": 3,  # fix the request: infer_fps out of range for this video, bad inference_params
    "invalid_video": 4,  # the input is not a readable video (not a video, no video stream, corrupt)
    "input_unreachable": 5,  # input_url could not be fetched (unreachable, HTML, forbidden address)
    "model_error": 6,  # the model could not be loaded or run
    "cancelled": 7,  # cancelled with DELETE /videoinfer
    "worker_lost": 8,  # the worker running it died too many times (max_attempts)
    "input_too_large": 9,  # the input is over the size limit
    "storage_full": 11,  # the server's data directory is full: the results could not be stored
    "service_unavailable": 10,  # the object storage stayed unreachable for VIDINFER_OUTAGE_SECONDS
}


def failure_kind(exc: BaseException) -> str:
    """Which failure kind an exception is."""
    if isinstance(exc, errors.Cancelled):
        return "cancelled"
    if isinstance(exc, errors.PayloadTooLarge):
        return "input_too_large"
    if isinstance(exc, errors.StorageFull):
        return "storage_full"
    if isinstance(exc, errors.DecodeError):
        return "invalid_video"
    if isinstance(exc, (errors.FetchError, errors.NotFound)):
        return "input_unreachable"
    if isinstance(exc, errors.ModelError):
        return "model_error"
    if isinstance(exc, errors.InvalidInput):
        return "invalid_request"
    if isinstance(exc, errors.Unavailable):
        return "service_unavailable"
    return "internal_error"


def wire_status(state: JobState, failure: str | None) -> int:
    if state is JobState.DONE:
        return STATUS_DONE
    if state is JobState.CANCELLED:
        return FAILURE_STATUS["cancelled"]
    if state is JobState.FAILED:
        return FAILURE_STATUS.get(failure or "internal_error", FAILURE_STATUS["internal_error"])
    return STATUS_RUNNING
