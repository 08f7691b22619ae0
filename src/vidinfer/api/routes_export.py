"""A finished job's results in another format (``vidinfer.export``): made on request from the stored results,
stored beside them (once per format), answered with a signed URL as the results are."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from vidinfer.api.deps import CallerDep, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.errors import InvalidInput, NotFound
from vidinfer.jobs.states import JobState

router = APIRouter(tags=["video inference"])
Format = Literal["jsonl", "csv", "parquet", "mot", "coco", "cvat", "webvtt", "srt"]


class ExportOut(BaseModel):
    job_id: str
    format: str
    model: str | None = Field(None, description="The model column exported, when one was asked for.")
    export_signed_url: str = Field(description="A GET URL of the exported file, valid as long as a results URL.")


def export_key(workspace: str, job_id: str, fmt: str, model: str | None) -> str:
    """Beside the results (``results/<ws>/<job>.json``); ``model`` is the index of the model column
    exported, never the client's string."""
    from vidinfer.export import FORMATS

    return f"results/{workspace}/{job_id}.export{'' if model is None else '-' + model}{FORMATS[fmt]}"


def _results(service: ServiceDep, key: str) -> dict:
    results = json.loads(service.blobs.get_bytes(key))
    if not isinstance(results, dict):
        raise NotFound("the job's results are missing", code="results_missing")
    return results


@router.get("/videoinfer/{job_id}/export", response_model=ExportOut, responses=error_responses(400, 401, 404, 422))
def export_results(service: ServiceDep, caller: CallerDep, job_id: Annotated[str, Path(max_length=64)],
                   format: Annotated[Format, Query(description="The format (see the README's Export).")],
                   model: Annotated[str | None, Query(max_length=128, description="A model column (results key) "
                                                      "to export; mot, coco, cvat: default the only one "
                                                      "with boxes.")] = None) -> ExportOut:
    """The job's results as ``format``: jsonl, csv, parquet, mot, coco, cvat, webvtt or srt.

    Made the first time it is asked for and kept beside the results; ``export_signed_url`` downloads it."""
    from vidinfer.export import export_bytes
    from vidinfer.wire import model_columns

    job = service.store.get(job_id, caller.workspace)  # another workspace's job: 404
    if job.state is not JobState.DONE or not job.result_key:
        raise InvalidInput(f"the job is {job.state.value}: only a finished job (status 0) can be exported",
                           code="job_not_done")
    ttl = service.settings.results_url_ttl
    results = None
    index = None
    if model is not None:
        results = _results(service, job.result_key)
        columns = model_columns(results)
        if model not in columns:
            raise InvalidInput(f"the job has no model {model[:100]!r}; it has {', '.join(columns) or 'none'}",
                               code="unknown_results_key")
        index = str(columns.index(model))
    key = export_key(job.workspace, job.id, format, index)
    if not service.blobs.exists(key):
        if results is None:
            results = _results(service, job.result_key)
        service.blobs.put_bytes(key, export_bytes(results, format, model))
    return ExportOut(job_id=job.id, format=format, model=model,
                     export_signed_url=service.blobs.sign_url("GET", key, ttl))
