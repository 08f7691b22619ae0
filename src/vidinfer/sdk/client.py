"""``vidinfer.Client``: a small synchronous client of the vidinfer HTTP API.

It speaks the wire contract (the one the official ``roboflow`` package speaks,
plus progress, cancel, listing and idempotency) with httpx and nothing else:
no server dependency is imported, so ``pip install vidinfer`` is enough::

    from vidinfer import Client

    with Client("http://127.0.0.1:8000", "my-key") as client:
        job_id = client.submit("video.mp4", models=["people"], infer_fps=5)
        client.wait(job_id, on_progress=lambda s: print(f"{s.progress:.0%}"))
        results = client.results(job_id)

Errors the server answers as ``{"error": {"code", "message"}}`` are raised as
the matching :mod:`vidinfer.errors` class (by code, else by HTTP status), with
the server's code and message; a job that ends badly raises :class:`JobFailed`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from vidinfer import errors
from vidinfer.errors import VidinferError
from vidinfer.urls import parse_http_url

__all__ = [
    "Client",
    "ConnectionFailed",
    "JobFailed",
    "JobNotDone",
    "JobStatus",
    "ModelSpec",
    "WaitTimeout",
]

#: job states that never change again
TERMINAL_STATES = frozenset({"done", "failed", "cancelled"})

#: status codes worth retrying while waiting (the server or a proxy in front of it is busy)
_TRANSIENT_STATUS = frozenset({502, 503, 504})


# -- errors ---------------------------------------------------------------------------------------


class JobFailed(VidinferError):
    """The job ended failed or cancelled; ``code`` and ``message`` are the server's reason."""

    status_code = 422
    code = "job_failed"

    def __init__(self, job: JobStatus) -> None:
        code = job.error_code or ("cancelled" if job.state == "cancelled" else "job_failed")
        reason = job.error_message or f"no reason given (status {job.status})"
        super().__init__(f"job {job.job_id} {job.state}: [{code}] {reason}", code=code)
        self.job = job
        self.job_id = job.job_id
        self.reason = reason


class JobNotDone(VidinferError):
    """Results were asked for a job that has not finished yet."""

    status_code = 409
    code = "job_not_done"


class WaitTimeout(VidinferError, TimeoutError):
    """``Client.wait`` gave up before the job finished; ``last`` is the last status seen."""

    status_code = 408
    code = "wait_timeout"

    def __init__(self, message: str, *, last: JobStatus | None = None) -> None:
        super().__init__(message)
        self.last = last


class ConnectionFailed(VidinferError):
    """The server could not be reached, or the connection broke mid-request."""

    status_code = 503
    code = "connection_error"


def _error_classes() -> dict[str, type[VidinferError]]:
    """Every error class in :mod:`vidinfer.errors`, by its default code."""
    found: dict[str, type[VidinferError]] = {}
    pending: list[type[VidinferError]] = [VidinferError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:
            found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


#: the class for an HTTP status when the error code names no class
_BY_STATUS: dict[int, type[VidinferError]] = {
    400: errors.InvalidInput,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    413: errors.PayloadTooLarge,
    422: errors.InvalidInput,
    429: errors.RateLimited,
}


def _retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header (a number; an HTTP date counts as ``default``)."""
    raw = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return default


def error_from_response(response: httpx.Response) -> VidinferError:
    """The :mod:`vidinfer.errors` exception for an error answer of the API."""
    code: str | None = None
    message: str | None = None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = err.get("message") if isinstance(err.get("message"), str) else None
        elif isinstance(err, str):
            message = err
        elif isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body.get("detail"), str):
            message = body["detail"]
    if message is None:
        text = response.text.strip()
        message = text[:500] if text else f"HTTP {response.status_code} {response.reason_phrase}".strip()
    status = response.status_code
    cls = _error_classes().get(code or "")
    if cls is None or (cls.status_code != status and status in _BY_STATUS):
        cls = _BY_STATUS.get(status, VidinferError)
    exc: VidinferError
    if issubclass(cls, errors.RateLimited):
        exc = cls(message, retry_after=int(_retry_after(response)), code=code)
    else:
        exc = cls(message, code=code)
    exc.status_code = status  # the status the server really answered
    return exc


# -- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model to run: ``model_id`` and ``model_version`` as the server maps them."""

    model_id: str
    model_version: str = "1"
    #: checked by the server against the model's task; None: the model's own task
    inference_type: str | None = None
    inference_params: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"model_id": self.model_id, "model_version": str(self.model_version)}
        if self.inference_type:
            data["inference_type"] = self.inference_type
        if self.inference_params:
            data["inference_params"] = dict(self.inference_params)
        return data


def _model_dict(model: ModelSpec | Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(model, ModelSpec):
        return model.to_dict()
    if isinstance(model, str):
        return ModelSpec(model).to_dict()
    if isinstance(model, Mapping):
        if "model_id" not in model:
            raise errors.InvalidInput(f"a model needs a 'model_id': {dict(model)!r}", code="invalid_model")
        data = {"model_version": "1", **model}
        data["model_version"] = str(data["model_version"])
        if data.get("inference_params") is None:
            data.pop("inference_params", None)
        return data
    raise errors.InvalidInput(f"a model is a ModelSpec, a dict or a model id, not {type(model).__name__}",
                              code="invalid_model")


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class JobStatus:
    """One answer of the status call.

    ``status`` is the wire's integer: 0 done, 1 queued or running, 2 and up failed.
    """

    job_id: str
    status: int
    state: str
    progress: float = 0.0
    frames_done: int | None = None
    frames_total: int | None = None
    eta_seconds: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    output_signed_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], job_id: str | None = None) -> JobStatus:
        status = data.get("status")
        status = int(status) if isinstance(status, (int, float)) and not isinstance(status, bool) else 1
        state = data.get("state")
        if not isinstance(state, str):
            state = "done" if status == 0 else "running" if status == 1 else "failed"
        err = data.get("error")
        error_code = error_message = None
        if isinstance(err, Mapping):
            error_code, error_message = err.get("code"), err.get("message")
        elif isinstance(err, str):
            error_message = err
        progress = _float_or_none(data.get("progress"))
        if progress is None:
            progress = 1.0 if state == "done" else 0.0
        return cls(
            job_id=str(data.get("job_id") or job_id or ""),
            status=status,
            state=state,
            progress=progress,
            frames_done=_int_or_none(data.get("frames_done")),
            frames_total=_int_or_none(data.get("frames_total")),
            eta_seconds=_float_or_none(data.get("eta_seconds")),
            error_code=error_code,
            error_message=error_message,
            output_signed_url=data.get("output_signed_url"),
            raw=dict(data),
        )

    @property
    def done(self) -> bool:
        """Finished with results."""
        return self.state == "done" or (self.status == 0 and self.state not in TERMINAL_STATES)

    @property
    def failed(self) -> bool:
        """Finished without results (failed or cancelled)."""
        return self.state in ("failed", "cancelled") or self.status >= 2

    @property
    def finished(self) -> bool:
        return self.done or self.failed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("raw")
        return data


# -- the client -----------------------------------------------------------------------------------


class Client:
    """A client of one vidinfer server, authenticated by one API key.

    ``api_url`` is the server's base URL (``http://host:port``); ``timeout`` is
    httpx's per-operation timeout in seconds. ``transport`` lets tests pass an
    ``httpx.MockTransport`` or ``httpx.WSGITransport``.
    """

    def __init__(self, api_url: str, api_key: str, *, timeout: float | httpx.Timeout = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        parse_http_url(api_url, "api_url")  # a malformed one is InvalidInput here, not a ValueError later
        if not api_key:
            raise errors.Unauthorized("an API key is required")
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False,
                                  headers={"User-Agent": "vidinfer-python"})
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:  # noqa: PYI034 - typing.Self needs 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.api_url!r})"

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {urlsplit(url).netloc}: {exc or type(exc).__name__}") from exc
        except httpx.InvalidURL as exc:  # a signed URL the server handed out, unreadable
            raise VidinferError(f"the server gave a malformed URL: {exc}", code="bad_response") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
              **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, self.api_url + path, params={"api_key": self.api_key, **(params or {})},
                              **kwargs)
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError as exc:
            raise VidinferError(f"{method} {path}: the server answered {response.status_code} with a body that is "
                                f"not JSON: {response.text[:200]!r}", code="bad_response") from exc
        if not isinstance(data, dict):
            raise VidinferError(f"{method} {path}: expected a JSON object, got {type(data).__name__}",
                                code="bad_response")
        return data

    # -- the calls --------------------------------------------------------------------------------
    def upload(self, path: str | os.PathLike[str]) -> str:
        """Upload a local video; returns the URL to pass as ``input_url``.

        The file is streamed from disk, never read whole into memory.
        """
        path = Path(path)
        if not path.is_file():
            raise errors.NotFound(f"no such file: {path}", code="file_not_found")
        answer = self._call("POST", "/video_upload_signed_url", json={"file_name": path.name})
        signed_url = answer.get("signed_url")
        if not isinstance(signed_url, str):
            raise VidinferError("the upload call answered no signed_url", code="bad_response")
        size = path.stat().st_size
        with path.open("rb") as stream:
            self._send("PUT", signed_url, content=_chunks(stream),
                       headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        return signed_url

    def submit(self, video: str | os.PathLike[str], models: Iterable[ModelSpec | Mapping[str, Any] | str], *,
               infer_fps: float = 5, notify_url: str | None = None, idempotency_key: str | None = None) -> str:
        """Start a job on a video URL or a local file (uploaded first); returns the job id.

        ``models`` are :class:`ModelSpec`, dicts in the wire's shape, or bare model ids.
        """
        text = os.fspath(video)
        if text.lower().startswith(("http://", "https://")):
            parse_http_url(text, "video")  # refused here, as the server would refuse it
            input_url = text
        else:
            input_url = self.upload(text)
        if notify_url is not None:
            parse_http_url(notify_url, "notify_url")
        model_list = [_model_dict(m) for m in ([models] if isinstance(models, (str, ModelSpec, Mapping)) else models)]
        if not model_list:
            raise errors.InvalidInput("at least one model is needed", code="no_models")
        body: dict[str, Any] = {"input_url": input_url, "infer_fps": infer_fps, "models": model_list}
        if notify_url is not None:
            body["notify_url"] = notify_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = self._call("POST", "/videoinfer", json=body, headers=headers)
        job_id = answer.get("job_id")
        if job_id is None:
            raise VidinferError(f"the submit call answered no job_id: {answer!r}", code="bad_response")
        return str(job_id)

    def status(self, job_id: str) -> JobStatus:
        """The job's state, progress and, once done, its results URL."""
        return JobStatus.from_dict(self._call("GET", "/videoinfer", params={"job_id": job_id}), job_id)

    def wait(self, job_id: str, *, interval: float = 2.0, timeout: float | None = None,
             on_progress: Callable[[JobStatus], Any] | None = None) -> JobStatus:
        """Poll until the job finishes; returns its final status.

        Raises :class:`JobFailed` when it failed or was cancelled, :class:`WaitTimeout`
        after ``timeout`` seconds. A 429 waits its ``Retry-After``; a dropped connection
        or a 502/503/504 is retried a few times in a row before it is raised.
        ``on_progress`` gets every status seen, the final one included.
        """
        deadline = None if timeout is None else self._clock() + timeout
        last: JobStatus | None = None
        transient = 0
        while True:
            pause = interval
            try:
                last = self.status(job_id)
                transient = 0
            except errors.RateLimited as exc:
                pause = max(interval, float(exc.retry_after))
            except VidinferError as exc:
                if not (isinstance(exc, ConnectionFailed) or exc.status_code in _TRANSIENT_STATUS) or transient >= 5:
                    raise
                transient += 1
                pause = max(interval, min(2.0 ** transient, 30.0))
            else:
                if on_progress is not None:
                    on_progress(last)
                if last.failed:
                    raise JobFailed(last)
                if last.done:
                    return last
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    state = f" (last state {last.state}, {last.progress:.0%})" if last else ""
                    raise WaitTimeout(f"job {job_id} did not finish within {timeout:g} s{state}", last=last)
                pause = min(pause, left)
            self._sleep(pause)

    def results(self, job_id: str) -> dict[str, Any]:
        """The results JSON of a finished job (see the contract's "Results JSON")."""
        url = self._results_url(job_id)
        response = self._send("GET", url)
        try:
            return response.json()
        except ValueError as exc:
            raise VidinferError(f"the results of job {job_id} are not JSON", code="bad_response") from exc

    def download(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Stream the results JSON of a finished job to ``path``."""
        url = self._results_url(job_id)
        path = Path(path)
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                with path.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"GET results of {job_id}: {exc}") from exc
        return path

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued or running job; returns its status after the call."""
        answer = self._call("DELETE", "/videoinfer", params={"job_id": job_id})
        if "status" in answer or "state" in answer:
            return JobStatus.from_dict(answer, job_id)
        return self.status(job_id)

    def jobs(self) -> list[JobStatus]:
        """This key's workspace's jobs, as the server lists them."""
        answer = self._call("GET", "/videoinfers")
        return [JobStatus.from_dict(item) for item in answer.get("jobs", []) if isinstance(item, Mapping)]

    def _results_url(self, job_id: str) -> str:
        job = self.status(job_id)
        if job.failed:
            raise JobFailed(job)
        if not job.done:
            raise JobNotDone(f"job {job_id} is {job.state} ({job.progress:.0%}): wait for it first")
        if not job.output_signed_url:
            raise VidinferError(f"job {job_id} is done but the server gave no output_signed_url",
                                code="bad_response")
        return job.output_signed_url


def _chunks(stream: Any, size: int = 1 << 20) -> Iterable[bytes]:
    while chunk := stream.read(size):
        yield chunk
