"""Idempotent submits: a key plus the SHA-256 of the request, stored on the job or batch row.

Same key and same request: the original is returned. Same key, other request: a Conflict. Two
identical submits racing: the unique index (tenant_id, idempotency_key) keeps one row; the loser
catches the IntegrityError and reads the winner's row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.errors import Conflict, InvalidJob
from scheduler.job_spec import text_problem
from storage.models import Batch, Job

Row = TypeVar("Row", Job, Batch)
MAX_KEY_CHARS = 200


def hash_json(body: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    """A sent Idempotency-Key: 1 to MAX_KEY_CHARS storable characters (an empty header is refused,
    not taken for no key)."""
    if not key or len(key) > MAX_KEY_CHARS:
        raise InvalidJob("Idempotency-Key", f"must be 1 to {MAX_KEY_CHARS} characters, got "
                                            f"{len(key)}")
    if problem := text_problem(key):
        raise InvalidJob("Idempotency-Key", problem)
    return key


def find_previous(session: Session, model: type[Row], tenant_id: str, key: str,
                  request_hash: str) -> Row | None:
    """The row an earlier submit with this key created, or None; Conflict if its request differs."""
    row = session.scalar(select(model).where(model.tenant_id == tenant_id,
                                             model.idempotency_key == key))
    if row is None:
        return None
    if row.request_hash != request_hash:
        what = "batch" if model is Batch else "job"
        raise Conflict(f"Idempotency-Key {key!r} was already used for {what} {row.id} with a "
                       f"different request; use a new key for a new request")
    return row
