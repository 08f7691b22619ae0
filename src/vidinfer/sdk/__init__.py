"""The Python client of a vidinfer server: httpx only, no server dependency.

``from vidinfer import Client`` is the short spelling; see :mod:`vidinfer.sdk.client`.
"""

from __future__ import annotations

from vidinfer.sdk.client import (
    Client,
    ConnectionFailed,
    JobFailed,
    JobNotDone,
    JobStatus,
    ModelSpec,
    WaitTimeout,
)

__all__ = ["Client", "ConnectionFailed", "JobFailed", "JobNotDone", "JobStatus", "ModelSpec", "WaitTimeout"]
