"""The calling tenant by API key, held for a few seconds instead of read per request.

A poller sends its key with every request; reading the tenant each time costs a database session
per request. ``TenantCache`` holds a tenant found by its key's hash for ``ttl_s``, but only while
the process's subscription is up (``api.snapshots.SnapshotListener``): ``imgq tenant set``
announces every change of limits on ``keys.TENANTS_CHANNEL``, and the listener forgets every
tenant held, so a change applies to the next request as before. A key that matches no tenant is
never held: a new tenant's key works at once.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.models import Tenant
from storage.tenants import hash_api_key

MAX_HELD = 10_000  # keys held at once; past that the cache starts again empty


class TenantCache:
    def __init__(self, sessions: sessionmaker[Session], ttl_s: float) -> None:
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.listening = False  # set by the subscription while it holds
        self.forgotten = 0  # times everything was forgotten (a lookup under way then is not kept)
        self._held: dict[str, tuple[float, Tenant]] = {}  # key hash -> (until, tenant)

    def forget(self) -> None:
        """A tenant changed (or the subscription went down): read every tenant afresh."""
        self.forgotten += 1
        self._held = {}

    def tenant(self, api_key: str) -> Tenant | None:
        digest = hash_api_key(api_key)
        now = time.monotonic()
        held = self._held.get(digest)
        if held is not None and held[0] > now and self.listening:
            return held[1]
        forgotten = self.forgotten
        with self.sessions() as session:
            found = session.scalar(select(Tenant).where(Tenant.api_key_hash == digest))
        if found is not None and self.ttl_s > 0 and self.listening and forgotten == self.forgotten:
            if len(self._held) >= MAX_HELD:
                self._held = {}
            self._held[digest] = (now + self.ttl_s, found)
        return found
