"""vidinfer: self-hostable video inference with a Roboflow-compatible API.

Importing the package loads nothing heavy: the client (``vidinfer.Client``) is
usable with only the base install; the engine and server live in optional extras.
The client's names are imported on first use (``vidinfer.Client``), so
``import vidinfer`` alone does not even load httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Client", "ConnectionFailed", "JobFailed", "JobNotDone", "JobStatus", "ModelSpec", "WaitTimeout",
           "__version__"]

#: names served lazily from vidinfer.sdk
_SDK_NAMES = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:
    from vidinfer.sdk import Client, ConnectionFailed, JobFailed, JobNotDone, JobStatus, ModelSpec, WaitTimeout


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from vidinfer import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'vidinfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SDK_NAMES})
