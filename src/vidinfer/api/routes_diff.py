"""Comparing two finished jobs of one input: ``GET /videoinfer/diff`` (the document of ``vidinfer diff --json``)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from vidinfer.api.deps import CallerDep, Service, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.errors import InvalidInput
from vidinfer.jobs.states import JobState
from vidinfer.jobs.store import Job

router = APIRouter(tags=["video inference"], responses=error_responses(400, 401, 404))


def _done(service: Service, workspace: str, job_id: str) -> Job:
    job = service.store.get(job_id, workspace)  # another workspace's job: 404, as an unknown id
    if job.state is not JobState.DONE or not job.result_key:
        raise InvalidInput(f"job {job_id} is {job.state.value}: only finished jobs with results can be compared",
                           code="job_not_done")
    return job


def _input(service: Service, job: Job) -> str:
    """What the job ran on: the stored object of an upload (whatever URL signed it), else its URL."""
    return service.blobs.key_from_url(job.input_url) or job.input_url


@router.get("/videoinfer/diff")
def diff(service: ServiceDep, caller: CallerDep, job_a: Annotated[str, Query(max_length=64)],
         job_b: Annotated[str, Query(max_length=64)],
         model_a: Annotated[str | None, Query(max_length=128)] = None,
         model_b: Annotated[str | None, Query(max_length=128)] = None,
         iou: Annotated[float, Query(gt=0, le=1)] = 0.5,
         top: Annotated[int, Query(ge=0, le=100)] = 8) -> dict[str, Any]:
    """Where two finished jobs of this workspace on the same input disagree: per class matched / only in A /
    only in B at IoU ``iou``, the confidence shift, per-minute disagreements and the ``top`` samples where
    they disagree most. ``model_a``/``model_b`` name each job's detection column when it has several."""
    from vidinfer.diff import compare

    a, b = _done(service, caller.workspace, job_a), _done(service, caller.workspace, job_b)
    if _input(service, a) != _input(service, b):
        raise InvalidInput("the two jobs ran on different inputs: only runs on the same video can be compared",
                           code="results_mismatch")
    results = [json.loads(service.blobs.get_bytes(j.result_key)) for j in (a, b)]
    return compare(*results, model_a=model_a, model_b=model_b, iou=iou, top=top, sources=(job_a, job_b))
