"""What routes depend on: the service's parts, and the caller's workspace from its API key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool

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


async def get_service(request: Request) -> Service:
    """Async, as it does no I/O: FastAPI runs a sync dependency in a worker thread, a hop per call."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


@dataclass(frozen=True)
class Caller:
    workspace: str
    api_key: str


async def get_caller(service: ServiceDep, api_key: Annotated[str | None, Query()] = None) -> Caller:
    """The key travels as ``?api_key=`` (as the hosted API and its SDK send it). A key validated within
    ``key_cache_ttl`` is answered on the event loop; else the database is read in a worker thread."""
    if not api_key:
        raise Unauthorized("an API key is required: add ?api_key=YOUR_KEY", code="missing_api_key")
    key = api_key[:200]
    workspace = service.store.cached_workspace(key) or await run_in_threadpool(service.store.workspace_for_key, key)
    if workspace is None:
        raise Unauthorized("this API key is not valid", code="invalid_api_key")
    return Caller(workspace, api_key)


CallerDep = Annotated[Caller, Depends(get_caller)]
