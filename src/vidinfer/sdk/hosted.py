"""The hosted SDK's names, over :class:`vidinfer.Client`: port code by changing an import.

Code written for Roboflow's hosted Video Inference API::

    from roboflow import Roboflow

becomes::

    from vidinfer.sdk.hosted import Roboflow

    rf = Roboflow(api_key="vi_...", api_url="http://127.0.0.1:8000")
    model = rf.workspace().project("people").version(1).model
    job_id, signed_url, expire_time = model.predict_video("match.mp4", fps=5, prediction_type="batch-video",
                                                         additional_models=["gaze"])
    results = model.poll_until_video_results(job_id)   # a progress bar on stderr, then the results dict

Two things differ, on purpose: a failed job raises :class:`vidinfer.JobFailed` with the
server's code and message (the hosted SDK returns the failure as if it were results),
and polling defaults to every 5 s with a progress bar instead of a silent minute.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from vidinfer.sdk.client import Client, JobStatus, ModelSpec

#: the hosted API's additional models, as its SDK names them
ADDITIONAL_MODELS = {
    "clip": ModelSpec("clip", "1", "clip-embed-image"),
    "gaze": ModelSpec("gaze", "1", "gaze-detection"),
}
_TASKS = ("object-detection", "classification", "instance-segmentation", "keypoint-detection")


class VideoModel:
    """A model that runs over videos: ``predict_video``, ``poll_for_video_results``, ``poll_until_video_results``."""

    def __init__(self, client: Client, model_id: str, model_version: str = "1",
                 inference_type: str = "object-detection") -> None:
        self.client = client
        self.spec = ModelSpec(model_id, str(model_version), inference_type)
        self.job_id: str | None = None

    def predict_video(self, video_path: str, fps: float = 5, additional_models: Sequence[str] | None = None,
                      prediction_type: str = "batch-video") -> tuple[str, str, int | None]:
        """Start a job on a local file (uploaded) or an http(s) URL: ``(job_id, signed_url, expire_seconds)``."""
        if prediction_type != "batch-video":
            raise ValueError(f"prediction_type must be 'batch-video', not {prediction_type!r}")
        unknown = sorted(set(additional_models or ()) - set(ADDITIONAL_MODELS))
        if unknown:
            raise ValueError(f"unknown additional models {unknown}; known: {sorted(ADDITIONAL_MODELS)}")
        models = [self.spec, *(ADDITIONAL_MODELS[m] for m in additional_models or ())]
        url = video_path if video_path.startswith(("http://", "https://")) else self.client.upload(video_path)
        self.job_id = self.client.submit(url, models, infer_fps=fps)
        expires = parse_qs(urlsplit(url.replace("#", "&", 1)).query).get("X-Goog-Expires", [None])[0]
        return self.job_id, url, int(expires) if expires and expires.isdigit() else None

    def poll_for_video_results(self, job_id: str | None = None) -> dict[str, Any]:
        """The results once the job is done, ``{}`` while it runs; a failed job raises ``JobFailed``."""
        job_id = self._job(job_id)
        status = self.client.status(job_id)
        if status.failed:
            from vidinfer.sdk.client import JobFailed

            raise JobFailed(status)
        return self.client.results(job_id) if status.done else {}

    def poll_until_video_results(self, job_id: str | None = None, *, interval: float = 5.0,
                                 timeout: float | None = None, progress: bool = True) -> dict[str, Any]:
        """Wait for the job (a progress bar on stderr unless ``progress=False``) and return its results."""
        job_id = self._job(job_id)
        bar = _ProgressBar(sys.stderr) if progress else None
        try:
            self.client.wait(job_id, interval=interval, timeout=timeout, on_progress=bar)
        finally:
            if bar is not None:
                bar.close()
        return self.client.results(job_id)

    def _job(self, job_id: str | None) -> str:
        job_id = job_id or self.job_id
        if not job_id:
            raise ValueError("no job: call predict_video first or pass job_id")
        return job_id


class CLIPModel(VideoModel):
    """``CLIPModel(api_key).predict_video(...)``: CLIP image embeddings of the sampled frames."""

    def __init__(self, api_key: str, api_url: str | None = None) -> None:
        super().__init__(Client(_api_url(api_url), api_key), "clip", "1", "clip-embed-image")


class GazeModel(VideoModel):
    """``GazeModel(api_key).predict_video(...)``: faces with yaw and pitch."""

    def __init__(self, api_key: str, api_url: str | None = None) -> None:
        super().__init__(Client(_api_url(api_url), api_key), "gaze", "1", "gaze-detection")


class Roboflow:
    """``Roboflow(api_key).workspace().project(P).version(V).model``, as in the hosted SDK."""

    def __init__(self, api_key: str, api_url: str | None = None) -> None:
        self.client = Client(_api_url(api_url), api_key)

    def workspace(self, name: str | None = None) -> Workspace:
        own = self.client._call("POST", "/")["workspace"]  # the key's workspace, as the hosted API answers
        if name not in (None, own):
            raise ValueError(f"this key belongs to workspace {own!r}, not {name!r}")
        return Workspace(self.client, own)


class Workspace:
    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def project(self, name: str) -> Project:
        info = self.client._call("GET", f"/{self.name}/{name}")
        return Project(self.client, self.name, name, info["project"].get("type", "object-detection"))


class Project:
    def __init__(self, client: Client, workspace: str, name: str, type: str) -> None:  # noqa: A002 - hosted name
        self.client, self.workspace, self.name, self.type = client, workspace, name, type

    def version(self, version: int | str) -> Version:
        return Version(self, str(version))


class Version:
    def __init__(self, project: Project, version: str) -> None:
        self.project = project
        self.version = version
        task = project.type if project.type in _TASKS else "object-detection"
        self.model = VideoModel(project.client, project.name, version, task)


def _api_url(api_url: str | None) -> str:
    """The server: the argument, else ``VIDINFER_API_URL``, else ``API_URL`` (the hosted SDK's variable)."""
    url = api_url or os.environ.get("VIDINFER_API_URL") or os.environ.get("API_URL")
    if not url:
        raise ValueError("say which server: Roboflow(api_key, api_url='http://host:8000') or set VIDINFER_API_URL")
    return url


class _ProgressBar:
    """A one-line text bar on a terminal stream, redrawn on each status."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width, self.shown = stream, width, False

    def __call__(self, status: JobStatus) -> None:
        filled = int(round(status.progress * self.width))
        frames = f" {status.frames_done}/{status.frames_total} frames" if status.frames_total else ""
        eta = f", eta {status.eta_seconds:.0f} s" if status.eta_seconds is not None else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {status.progress:4.0%} "
                          f"{status.state}{frames}{eta}   ")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
