"""Request and response bodies of the video API (the hosted API's names, plus our additions)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ModelIn(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_id: str = Field(min_length=1, max_length=128, examples=["coco"])
    model_version: str | None = Field(None, max_length=128,
                                      description="Always a string; may be a slug. Without it, version 1 is "
                                                  "looked up first.")
    inference_type: str | None = Field(
        None, max_length=64, examples=["object-detection"],
        description="The hosted API's task name (object-detection, classification, instance-segmentation, "
                    "keypoint-detection, clip-embed-image, gaze-detection; ocr): checked against the model's "
                    "task. Absent: the model's own task.")
    inference_params: dict[str, Any] | None = Field(
        None, description="confidence, iou (alias overlap), max_detections, classes; model-specific extras.")

    @field_validator("model_version", mode="before")
    @classmethod
    def _version_as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class VideoInferIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_url: str = Field(min_length=1, max_length=4096, json_schema_extra={"format": "uri"},
                           description="An upload URL from /video_upload_signed_url, an http(s) URL to fetch, or "
                                       "s3://BUCKET/KEY. A malformed one is refused with 400 invalid_url.")
    infer_fps: float | str = Field(
        5, description="Frames per second to infer: from 0.01 to the video's own frame rate; a number or 'num/den'.")
    models: list[ModelIn] = Field(min_length=1, max_length=16)
    notify_url: Annotated[str, Field(max_length=4096, json_schema_extra={"format": "uri"})] | None = Field(
        None, description="An http(s) URL POSTed the job's status when it ends (signed; see the README).")
    tracker: str | None = Field(None, max_length=32, examples=["bytetrack"],
                                description="Track detections across samples: each gets a tracker_id, and the "
                                            "results a top-level 'tracks' key. Implied by lines or zones.")
    lines: list[list[Any] | dict[str, Any]] | None = Field(
        None, max_length=32, examples=[[[[0, 360], [1280, 360]]], [{"points": [[0, 360], [1280, 360]], "margin": 20}]],
        description="Lines to count crossings of, in source pixels: [[x1, y1], [x2, y2]] each (or [x1, y1, x2, y2]), "
                    "or {\"points\": [[x1, y1], [x2, y2]], \"margin\": 20 or \"25%\", \"samples\": 2}. "
                    "Walking from the first point to the second, crossing to the left-hand side is 'in'. A crossing "
                    "counts once the box centre is margin past the line (pixels, or percent of the box; default "
                    "25%) on samples samples in a row (default 2).")
    zones: list[list[Any]] | None = Field(
        None, max_length=32, examples=[[[100, 100], [500, 100], [500, 400], [100, 400]]],
        description="Polygons to count presence and dwell in, source pixels: [[x, y], ...] with 3 points or more.")
    skip_static: float | None = Field(
        None, examples=[2.0], json_schema_extra={"exclusiveMinimum": 0, "maximum": 255},  # checked by the route
        description="Skip samples that did not change: a sample whose 64x36 luma thumbnail differs from the last "
                    "inferred sample's by less than this (mean absolute difference, 0-255; above 0, at most 255, "
                    "else 400 invalid_skip_static) is not inferred, and each model's entry for it repeats that "
                    "sample's predictions with \"reused_from\": its sample index (its position in the lists). "
                    "Omitted: every sample is inferred.")


class VideoInferOut(BaseModel):
    job_id: str
    message: str


class UploadIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    file_name: str = Field("video.mp4", min_length=1, max_length=512)


class UploadOut(BaseModel):
    signed_url: str


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


_ERROR_DESCRIPTIONS = {
    400: "Malformed request (`invalid_request` for a body or parameter that fails validation)",
    401: "Missing or invalid API key", 403: "Signed URL refused (tampered, expired, unsigned, other method)",
    404: "Not found, or not this workspace's", 413: "Upload over `VIDINFER_MAX_UPLOAD_BYTES`",
    422: "Unknown model, or an input URL the server may not fetch", 429: "Too many status calls: see `Retry-After`",
    500: "Unexpected fault (see the server log)",
    507: "The server's storage is full (`storage_full`): an operator must free space; nothing was kept",
    503: "A service the API needs is down or restarting (`database_unavailable`, `storage_unavailable`): "
         "retry after `Retry-After` seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route's error answers, all ``{"error": {"code", "message"}}`` (app.py's handler)."""
    return {code: {"model": ErrorOut, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


class JobStatusOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    job_id: str
    status: int = Field(description="0 done, 1 queued or running, 2 or more failed (see the README's table).")
    state: str = Field(description="queued, running, done, failed or cancelled")
    progress: float = Field(description="0 to 1")
    frames_done: int
    frames_total: int | None
    eta_seconds: float | None
    output_signed_url: str | None = None
    error: ErrorBody | None = None


class JobListOut(BaseModel):
    jobs: list[JobStatusOut]
