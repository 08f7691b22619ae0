"""The local store's signed URLs: PUT (or POST) an upload, GET a results file.

An upload URL is signed for PUT; POST with the raw body is taken on the very same URL as a PUT, because
guides for the hosted API tell curl users to POST the file there. A results URL (signed for GET) takes
neither. With S3 storage these routes answer 404: clients use the S3 server's presigned URLs, which
take PUT only.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.convertors import Convertor, register_url_convertor

from vidinfer.api.deps import Service, ServiceDep
from vidinfer.api.schemas import error_responses
from vidinfer.errors import InvalidInput, NotFound, PayloadTooLarge
from vidinfer.storage.local import LocalStore, storage_error


class _KeyConvertor(Convertor[str]):
    """``{key:blobkey}``: the rest of the path, control characters included (Starlette's ``path`` stops
    at a newline, so such a key fell through to other routes' 405). ``check_key`` and the signature judge it."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("blobkey", _KeyConvertor())

router = APIRouter(tags=["signed URLs"], responses=error_responses(400, 403, 404))


def _local(service: Service) -> LocalStore:
    if not isinstance(service.blobs, LocalStore):
        raise NotFound("this server keeps blobs in object storage: use the presigned URLs it hands out",
                       code="not_found")
    return service.blobs


#: bytes streamed between two checks of the disk's free space during an upload
SPACE_CHECK_EVERY = 8 * 2**20


@router.put("/blobs/{key:blobkey}", responses=error_responses(413, 507))
async def put_blob(key: str, request: Request, service: ServiceDep) -> JSONResponse:
    """Upload to a URL from ``/video_upload_signed_url``: streamed to disk, never held in memory; refused
    with 507 ``storage_full`` when the server's disk has no room (the partial file is removed)."""
    blobs = _local(service)
    blobs.verify("PUT", key, request.query_params)  # a POST too: only an upload URL is signed for PUT
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        raise InvalidInput("send the video itself as the request body (curl --data-binary @video.mp4 or -T), "
                           "not as a multipart form (curl -F)", code="multipart_upload")
    limit = service.settings.max_upload_bytes
    # Content-Length is framing (the HTTP server has checked it), not an API parameter: read, not declared
    length = request.headers.get("content-length", "")
    content_length = int(length) if length.isdigit() else 0
    if content_length > limit:
        raise PayloadTooLarge(f"the upload is {content_length} bytes; the limit is {limit}", code="upload_too_large")
    tmp, dest = blobs.open_upload(key, content_length)
    size = checked = 0
    try:
        with open(tmp, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes",
                                          code="upload_too_large")
                if size - checked >= SPACE_CHECK_EVERY:  # the disk may fill meanwhile; or no Content-Length
                    blobs.check_space(content_length - size if content_length else SPACE_CHECK_EVERY, key)
                    checked = size
                out.write(chunk)
        if size == 0:
            raise InvalidInput("the upload is empty", code="empty_upload")
        os.replace(tmp, dest)
    except OSError as exc:
        raise storage_error(key, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return JSONResponse({"key": key, "size": size})


@router.post("/blobs/{key:blobkey}", responses=error_responses(413, 507))
async def post_blob(key: str, request: Request, service: ServiceDep) -> JSONResponse:
    """The same upload as PUT, for clients that POST the raw body to the upload URL (it is signed for PUT;
    POST is accepted on upload URLs only, never on a results URL)."""
    return await put_blob(key, request, service)


@router.get("/blobs/{key:blobkey}")
def get_blob(key: str, request: Request, service: ServiceDep) -> FileResponse:
    """Download with a signed URL (the results file from ``output_signed_url``)."""
    blobs = _local(service)
    blobs.verify("GET", key, request.query_params)
    path = blobs.path(key)
    if not path.is_file():
        raise NotFound("no such object", code="object_not_found")
    media = {".json": "application/json", ".mp4": "video/mp4", ".jpg": "image/jpeg", ".csv": "text/csv",
             ".vtt": "text/vtt", ".jsonl": "application/x-ndjson", ".xml": "application/xml",
             ".srt": "application/x-subrip", ".txt": "text/plain"}.get(os.path.splitext(key)[1], "application/octet-stream")
    return FileResponse(path, media_type=media)
