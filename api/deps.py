"""Request dependencies: the services, the calling tenant (Bearer API key) and the operator
(Bearer admin token, ``IMGQ_ADMIN_TOKEN``)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from scheduler.tenants.quotas import TenantLimits
from storage.models import Tenant

_bearer = HTTPBearer(auto_error=False, description="A tenant API key: `Authorization: Bearer imgq_...`")
bearer = _bearer  # for routes whose key is optional (the status while it is public)


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def _services(request: Request) -> Services:
    """The dependency: a coroutine, so FastAPI calls it in the event loop, not in a thread."""
    return services(request)


def tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "missing API key: send `Authorization: Bearer <key>` "
                                 "(create one with `imgq tenant create NAME`)", headers=challenge)
    svc = services(request)
    found = svc.tenants.tenant(credentials.credentials)
    if found is None:
        raise HTTPException(401, "invalid API key", headers=challenge)
    # Every request of a tenant counts against its requests per minute.
    svc.rate.check(request, found.id, TenantLimits.resolve(found, svc.limit_defaults).rpm)
    return found


def admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Admin endpoints take the admin token only; a tenant's API key is just a wrong token."""
    token = services(request).settings.admin_token
    if not token:
        raise HTTPException(403, "admin endpoints are disabled: set IMGQ_ADMIN_TOKEN to a secret "
                                 "and send it as `Authorization: Bearer <token>`")
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "missing admin token: send `Authorization: Bearer <IMGQ_ADMIN_TOKEN>`",
                            headers=challenge)
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(401, "invalid admin token", headers=challenge)


ServicesDep = Annotated[Services, Depends(_services)]
TenantDep = Annotated[Tenant, Depends(tenant)]
AdminOnly = Depends(admin)
