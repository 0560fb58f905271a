"""Tenant records and API-key lookup (keys are stored as SHA-256 hashes, never in clear)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Tenant

API_KEY_PREFIX = "imgq_"
# A tenant's own limits; None (NULL) means the IMGQ_TENANT_* default, 0 no limit.
LIMIT_COLUMNS = ("rpm", "max_queued", "max_running", "budget_usd", "budget_period")
BUDGET_PERIODS = ("day", "month")


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` then 32 random bytes in standard base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def create_tenant(session: Session, name: str, **limits: Any) -> tuple[Tenant, str]:
    """Create a tenant (with its own ``limits``, see LIMIT_COLUMNS); returns it with its API
    key, which is shown once and not stored."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    tenant = Tenant(
        name=name,
        api_key_hash=hash_api_key(api_key),
        api_key_prefix=api_key[:12],
        webhook_secret=new_webhook_secret(),
    )
    set_limits(tenant, limits)
    session.add(tenant)
    session.flush()
    return tenant, api_key


def set_limits(tenant: Tenant, limits: dict[str, Any]) -> None:
    """Change some of a tenant's limits (None: back to the default)."""
    for column, value in limits.items():
        if column not in LIMIT_COLUMNS:
            raise ValueError(f"unknown limit {column!r}; limits: {', '.join(LIMIT_COLUMNS)}")
        if column == "budget_period" and value is not None and value not in BUDGET_PERIODS:
            raise ValueError(f"budget_period must be one of {', '.join(BUDGET_PERIODS)}")
        if column != "budget_period" and value is not None and value < 0:
            raise ValueError(f"{column} must be 0 (no limit) or more")
        setattr(tenant, column, value)


def tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def tenant_for_api_key(session: Session, api_key: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.api_key_hash == hash_api_key(api_key)))
