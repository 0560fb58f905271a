"""One stored image as an HTTP answer, for every endpoint that serves one (after its own tenant
or link check): the bytes, or with ``IMGQ_BLOB_PRESIGNED_URLS`` and an S3 store a 307 to a
presigned URL of the object, so that image bytes do not pass through the API."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from fastapi.responses import RedirectResponse

from api.services import Services
from scheduler.errors import NotFound
from storage.blobs import BlobNotFound
from storage.models import Job

REDIRECT_DOC: dict[int | str, dict[str, Any]] = {307: {
    "description": "With IMGQ_BLOB_PRESIGNED_URLS and an S3 store: `Location` is a presigned URL "
                   "of the image, valid IMGQ_BLOB_PRESIGN_TTL_S seconds"}}


def image_response(svc: Services, job: Job, index: int, cache_control: str) -> Response:
    """Image ``index`` of ``job`` (a 404 if it has none such). The presigned URL is signed
    without asking the store, so it is not checked to exist: a job's images are stored before
    it succeeds. The redirect is never cached, since the URL expires."""
    images = job.images or []
    if not 0 <= index < len(images):
        raise NotFound("image", f"{job.id}/{index}")
    image = images[index]
    if svc.settings.blob_presigned_urls:
        url = svc.blobs.link(image["key"], ttl_s=svc.settings.blob_presign_ttl_s,
                             content_type=image["content_type"])
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    try:
        data = svc.blobs.get(image["key"])
    except BlobNotFound as exc:
        raise NotFound("image", f"{job.id}/{index}") from exc
    return Response(data, media_type=image["content_type"], headers={"Cache-Control": cache_control})
