"""Storage on SQLite and PostgreSQL: migrations, rows as storage/models.py defines them, the blob store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.blobs import BlobNotFound, LocalBlobStore, image_key
from storage.db import make_engine, make_sessionmaker
from storage.models import Attempt, Job, JobStatus, Tenant
from storage.tenants import create_tenant, hash_api_key, tenant_for_api_key


@pytest.fixture()
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _job(tenant_id: str, **overrides: object) -> Job:
    fields: dict[str, object] = dict(tenant_id=tenant_id, prompt="a fox ✨ 狐", width=1024, height=768,
                                     n=1, route="default", requested_model="gpt-image-1.5",
                                     metadata_={"order": 7, "tags": ["a"]}, images=[])
    fields.update(overrides)
    return Job(**fields)


def test_migration_creates_every_table(database_url: str) -> None:
    engine = make_engine(database_url)
    tables = set(sqlalchemy.inspect(engine).get_table_names())
    engine.dispose()
    assert {"tenants", "batches", "jobs", "attempts", "alembic_version"} <= tables


def test_api_keys_are_stored_hashed_and_found_by_hash(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        tenant, key = create_tenant(session, "acme")
    with sessions() as session:
        stored = session.scalar(select(Tenant).where(Tenant.id == tenant.id))
        assert stored is not None
        assert key not in (stored.api_key_hash, stored.api_key_prefix + "x")
        assert stored.api_key_hash == hash_api_key(key)
        assert tenant_for_api_key(session, key).id == tenant.id  # type: ignore[union-attr]
        assert tenant_for_api_key(session, key + "x") is None


def test_job_with_attempts_round_trips_with_aware_times_and_json(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        tenant, _ = create_tenant(session, "acme")
        job = _job(tenant.id)
        session.add(job)
        session.flush()
        session.add(Attempt(job_id=job.id, model="gemini-3-pro-image-preview", latency_ms=40,
                            outcome="overloaded", http_status=503))
        session.add(Attempt(job_id=job.id, model="gpt-image-1.5", latency_ms=900,
                            outcome="success", http_status=200, cost_usd=0.04,
                            vendor_request_id="req_1"))
    with sessions() as session:
        loaded = session.scalar(select(Job).where(Job.id == job.id))
        assert loaded is not None
        assert loaded.prompt == "a fox ✨ 狐"
        assert loaded.metadata_ == {"order": 7, "tags": ["a"]}
        assert loaded.status == JobStatus.QUEUED
        assert loaded.created_at.tzinfo is not None
        assert abs((datetime.now(UTC) - loaded.created_at).total_seconds()) < 60
        assert [a.outcome for a in loaded.attempts] == ["overloaded", "success"]


def test_idempotency_key_is_unique_per_tenant_only(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        one, _ = create_tenant(session, "one")
        two, _ = create_tenant(session, "two")
        session.add(_job(one.id, idempotency_key="k1"))
        session.add(_job(two.id, idempotency_key="k1"))
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(_job(one.id, idempotency_key="k1"))


def test_blob_store_writes_atomically_and_refuses_escapes(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "images")
    key = image_key("job_0123456789abcdef", 0, "image/png")
    blobs.put(key, b"\x89PNG...")
    assert blobs.get(key) == b"\x89PNG..."
    assert blobs.exists(key)
    assert key.endswith("/0.png")
    assert not list((tmp_path / "images").rglob(".tmp-*"))
    with pytest.raises(BlobNotFound):
        blobs.get("../../etc/passwd")
    with pytest.raises(BlobNotFound):
        blobs.get("ef/job_missing/0.png")
