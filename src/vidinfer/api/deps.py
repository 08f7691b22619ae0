"""What routes depend on: the service's parts, and the caller's workspace from its API key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request

from vidinfer.api.ratelimit import RateLimiter
from vidinfer.config import Settings
from vidinfer.errors import Unauthorized
from vidinfer.jobs.store import JobStore
from vidinfer.models.registry import ModelRegistry
from vidinfer.storage.base import BlobStore


@dataclass
class Service:
    """The parts one API process holds (built once by ``create_app``)."""

    settings: Settings
    store: JobStore
    blobs: BlobStore
    registry: ModelRegistry
    status_limiter: RateLimiter
    #: hands a new job to the distributed engine; None in the embedded mode (the pool polls the store)
    dispatch: Callable[[str], None] | None = None


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


@dataclass(frozen=True)
class Caller:
    workspace: str
    api_key: str


def get_caller(service: ServiceDep, api_key: Annotated[str | None, Query()] = None) -> Caller:
    """The key travels as ``?api_key=`` (as the hosted API and its SDK send it)."""
    if not api_key:
        raise Unauthorized("an API key is required: add ?api_key=YOUR_KEY", code="missing_api_key")
    workspace = service.store.workspace_for_key(api_key[:200])
    if workspace is None:
        raise Unauthorized("this API key is not valid", code="invalid_api_key")
    return Caller(workspace, api_key)


CallerDep = Annotated[Caller, Depends(get_caller)]
