"""Search over what was seen: rank the sampled frames of a workspace's finished jobs by text."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from vidinfer.api.deps import CallerDep, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.errors import InvalidInput
from vidinfer.jobs.states import JobState

router = APIRouter(tags=["search"], responses=error_responses(400, 401, 404, 422))

#: finished jobs searched per query, newest first
MAX_JOBS = 500


@router.get("/search")
def search(service: ServiceDep, caller: CallerDep, q: Annotated[str, Query(min_length=1, max_length=500)],
           limit: Annotated[int, Query(ge=1, le=200)] = 10,
           model: Annotated[str, Query(max_length=128)] = "clip") -> dict[str, Any]:
    """Frames of this workspace's finished jobs that best match the text ``q``, by CLIP similarity.

    Only jobs run with the CLIP model ``model`` (``clip-embed-image``) are searched; each hit gives the
    job, ``frame_offset``, ``time_offset`` and the cosine ``score``.
    """
    from vidinfer.search import search_text

    clip = service.registry.load(model)
    if not hasattr(clip, "embed_text"):
        raise InvalidInput(f"{model} is not a CLIP model", code="not_a_clip_model")
    jobs = [j for j in service.store.list(caller.workspace, limit=MAX_JOBS, state=JobState.DONE)
            if j.result_key and any(m["model_id"] == model for m in j.models)]
    documents = ((j.id, json.loads(service.blobs.get_bytes(j.result_key))) for j in jobs)
    hits = search_text(clip, q, documents, key=model, top_k=limit) if jobs else []
    return {"query": q, "jobs_searched": len(jobs),
            "hits": [{"job_id": h.source, "frame_offset": h.frame_offset, "time_offset": h.time_offset,
                      "score": h.score} for h in hits]}
