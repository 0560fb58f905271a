"""A paid result is kept before it is recorded: its images go to the blob store first.

A manifest (what the job's row would record) is written beside them only when recording fails
because the database is unreachable, before the write is retried: once it exists, a run of the
same job (after the worker died during the outage) finishes from it without calling a vendor.
On the common path the job's row commits right after the images are stored, so a result costs
its images' writes and nothing more; the window a crash could cost a second call is then the
one transaction, no wider than the one between the vendor's answer and the images being stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from storage.blobs import BlobNotFound, BlobStore, image_key
from workers.router import AttemptRecord, RouteOutcome


def manifest_key(job_id: str) -> str:
    return f"{job_id[-2:]}/{job_id}/result.json"


@dataclass(frozen=True)
class StoredResult:
    served_by: str
    images: list[dict[str, Any]]
    attempts: list[AttemptRecord]
    row_ids: list[int]


def store(blobs: BlobStore, job_id: str, outcome: RouteOutcome,
          row_ids: list[int]) -> StoredResult:
    """Write a successful walk's images; returns what the job records (see ``keep``)."""
    assert outcome.result is not None and outcome.served_by is not None
    images: list[dict[str, Any]] = []
    for k, image in enumerate(outcome.result.images):
        key = image_key(job_id, k, image.content_type)
        blobs.put(key, image.data)
        images.append({"key": key, "content_type": image.content_type,
                       "width": image.width, "height": image.height})
    return StoredResult(outcome.served_by, images, list(outcome.attempts), list(row_ids))


def keep(blobs: BlobStore, job_id: str, stored: StoredResult) -> None:
    """Write the manifest of a stored result that could not be recorded yet."""
    manifest = {"served_by": stored.served_by, "images": stored.images,
                "row_ids": stored.row_ids, "attempts": [asdict(a) for a in stored.attempts]}
    blobs.put(manifest_key(job_id), json.dumps(manifest).encode())


def load(blobs: BlobStore, job_id: str) -> StoredResult | None:
    """The result an earlier run stored and could not record, if any."""
    try:
        raw = json.loads(blobs.get(manifest_key(job_id)))
    except BlobNotFound:
        return None
    return StoredResult(raw["served_by"], raw["images"],
                        [AttemptRecord(**a) for a in raw["attempts"]], raw["row_ids"])
