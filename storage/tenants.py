"""Tenant records and API-key lookup (keys are stored as SHA-256 hashes, never in clear)."""

from __future__ import annotations

import base64
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Tenant

API_KEY_PREFIX = "imgq_"


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` then 32 random bytes in standard base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def create_tenant(session: Session, name: str) -> tuple[Tenant, str]:
    """Create a tenant; returns it with its API key, which is shown once and not stored."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    tenant = Tenant(
        name=name,
        api_key_hash=hash_api_key(api_key),
        api_key_prefix=api_key[:12],
        webhook_secret=new_webhook_secret(),
    )
    session.add(tenant)
    session.flush()
    return tenant, api_key


def tenant_for_api_key(session: Session, api_key: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.api_key_hash == hash_api_key(api_key)))
