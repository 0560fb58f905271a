"""Webhooks: the address guard, Standard Webhooks signing, and the delivery loop.

Who sends: nobody on the job's path. The worker that finishes a job (or the last job of a batch)
only writes a ``webhook_deliveries`` row in the same transaction as the batch's completion; a
thread of the scheduler process (``imgq scheduler``) sends due rows, records every attempt in
``webhook_attempts`` and retries failures on ``webhook_retry_schedule_s``. Several scheduler
processes may run the loop: a row is claimed by a conditional update before it is sent.

The guard resolves the host, refuses the URL if any address is loopback, private, link-local,
multicast, reserved or unspecified (unless the operator allows it), then connects to that vetted
address (pinned), so a DNS answer that changes between check and connect cannot redirect us.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from imagequeue import metrics
from imagequeue.settings import Settings
from scheduler.errors import QueueError
from scheduler.outages import DEPENDENCY_ERRORS, OutageLog, RepeatedErrors
from storage.models import Tenant, WebhookAttempt, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
SECRET_PREFIX = "whsec_"
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


class WebhookRefused(QueueError):
    """The URL is malformed or points where webhooks may not go."""


@dataclass(frozen=True)
class WebhookPolicy:
    allow_loopback: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookPolicy:
        return cls(settings.webhook_allow_loopback,
                   tuple(ipaddress.ip_network(n, strict=False)
                         for n in settings.webhook_allowed_networks))

    def permits(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed_networks):
            return True
        if address.is_loopback:
            return self.allow_loopback
        return address.is_global and not (address.is_multicast or address.is_reserved
                                           or address.is_link_local or address.is_private
                                           or address.is_unspecified)


@dataclass(frozen=True)
class VettedTarget:
    url: httpx.URL
    address: str  # the resolved IP we will connect to


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def vet_url(url: str, policy: WebhookPolicy, resolve: Resolver = system_resolver) -> VettedTarget:
    """Resolve the URL's host and check every address; raises WebhookRefused. Never connects."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise WebhookRefused(f"webhook_url is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise WebhookRefused("webhook_url must be an absolute http:// or https:// URL")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolve(parsed.host, port)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise WebhookRefused(f"webhook_url host {parsed.host!r} does not resolve: {exc}") from exc
    if not addresses:
        raise WebhookRefused(f"webhook_url host {parsed.host!r} does not resolve")
    refused = [a for a in addresses if not policy.permits(a)]
    if refused:
        raise WebhookRefused(
            f"webhook_url host {parsed.host!r} resolves to {refused[0]}, a loopback, private, "
            f"link-local or reserved address; webhooks must reach a public address "
            f"(an operator can allow networks with IMGQ_WEBHOOK_ALLOWED_NETWORKS)")
    return VettedTarget(parsed, str(addresses[0]))


def pinned_request(target: VettedTarget, body: bytes, headers: dict[str, str]) -> httpx.Request:
    """A POST to the vetted address itself, keeping the original Host header and TLS name."""
    host_header = target.url.netloc.decode("ascii")
    ip = ipaddress.ip_address(target.address)
    pinned = target.url.copy_with(host=f"[{ip}]" if ip.version == 6 else str(ip))
    return httpx.Request(
        "POST", pinned, content=body,
        headers={**headers, "Host": host_header, "Content-Type": "application/json"},
        extensions={"sni_hostname": target.url.host},
    )


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret: the base64-decoded part after the prefix."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return encoded.encode()  # a secret from before secrets were base64: its text is the key


def sign(secret: str, message_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64 HMAC-SHA256 of id.timestamp.body."""
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def enqueue(session: Session, *, tenant_id: str, event_type: str, subject_id: str, url: str,
            data: dict[str, Any]) -> WebhookDelivery:
    """Add a delivery to the caller's transaction; the delivery loop sends it once committed."""
    now = utcnow()
    delivery = WebhookDelivery(
        tenant_id=tenant_id, event_type=event_type, subject_id=subject_id, url=url,
        payload={"type": event_type, "timestamp": now.isoformat(), "data": data},
        status=PENDING, attempts_count=0, next_attempt_at=now, created_at=now)
    session.add(delivery)
    return delivery


def deliveries_for(session: Session, tenant_id: str, subject_id: str) -> list[WebhookDelivery]:
    rows = session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.subject_id == subject_id)
        .order_by(WebhookDelivery.created_at))
    found = list(rows)
    for delivery in found:
        _ = delivery.attempts  # load while the session is open
    return found


@dataclass(frozen=True)
class AttemptResult:
    response_status: int | None
    error: str | None
    latency_ms: int | None

    @property
    def ok(self) -> bool:
        return self.response_status is not None and 200 <= self.response_status < 300


class WebhookSender:
    def __init__(self, sessions: sessionmaker[Session], http: httpx.Client, policy: WebhookPolicy,
                 retry_schedule_s: Sequence[float], *, resolve: Resolver = system_resolver,
                 claim_s: float = 60.0) -> None:
        self.sessions = sessions
        self.http = http
        self.policy = policy
        self.retry_schedule_s = list(retry_schedule_s)
        self.resolve = resolve
        self.claim_s = claim_s

    def deliver_due(self, limit: int = 50) -> int:
        """Send every delivery that is due (up to ``limit``); returns how many were attempted."""
        now = utcnow()
        with self.sessions() as session:
            due = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
                .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at).limit(limit)).all()
        attempted = 0
        for delivery_id, due_at in due:
            if self._claim(delivery_id, due_at, now):
                self._attempt(delivery_id)
                attempted += 1
        return attempted

    def _claim(self, delivery_id: str, due_at: datetime | None, now: datetime) -> bool:
        with self.sessions.begin() as session:
            return bool(session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == PENDING,
                       WebhookDelivery.next_attempt_at == due_at)
                .values(next_attempt_at=now + timedelta(seconds=self.claim_s))
            ).rowcount)  # type: ignore[attr-defined]

    def _attempt(self, delivery_id: str) -> None:
        with self.sessions() as session:
            delivery = session.get_one(WebhookDelivery, delivery_id)
            secret = session.get_one(Tenant, delivery.tenant_id).webhook_secret
            url, payload = delivery.url, delivery.payload
        result = self._send(url, delivery_id, secret, payload)
        now = utcnow()
        with self.sessions.begin() as session:
            delivery = session.get_one(WebhookDelivery, delivery_id)
            session.add(WebhookAttempt(delivery_id=delivery_id, attempted_at=now,
                                       response_status=result.response_status,
                                       latency_ms=result.latency_ms, error=result.error))
            delivery.attempts_count += 1
            delivery.last_response_status = result.response_status
            delivery.last_error = result.error
            if result.ok:
                delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                    SUCCEEDED, now, None)
                outcome = "delivered"
            elif delivery.attempts_count > len(self.retry_schedule_s):
                delivery.status, delivery.next_attempt_at = FAILED, None
                outcome = "failed"
            else:
                delay_s = self.retry_schedule_s[delivery.attempts_count - 1]
                delivery.next_attempt_at = now + timedelta(seconds=delay_s)
                outcome = "retrying"
        metrics.WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()  # once the attempt is on record

    def _send(self, url: str, message_id: str, secret: str,
              payload: dict[str, Any]) -> AttemptResult:
        try:
            target = vet_url(url, self.policy, self.resolve)
        except WebhookRefused as exc:
            return AttemptResult(None, f"refused: {exc}", None)
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp_s = int(time.time())
        headers = {"webhook-id": message_id, "webhook-timestamp": str(timestamp_s),
                   "webhook-signature": sign(secret, message_id, timestamp_s, body),
                   "User-Agent": "imagequeue-webhooks/1"}
        started = time.perf_counter()
        try:
            response = self.http.send(pinned_request(target, body, headers))
            response.close()
        except httpx.HTTPError as exc:
            return AttemptResult(None, f"{type(exc).__name__}: {exc}",
                                 int((time.perf_counter() - started) * 1000))
        latency_ms = int((time.perf_counter() - started) * 1000)
        error = None if response.is_success else f"receiver answered HTTP {response.status_code}"
        return AttemptResult(response.status_code, error, latency_ms)

    def run(self, stop: threading.Event, poll_s: float,
            between: Callable[[], object] | None = None) -> None:
        """Deliver until ``stop`` is set; ``between`` runs after each pass (e.g. a sweep).

        A database outage is logged when it starts and when it ends (``OutageLog``) and retried
        every ``max(poll_s, 1 s)`` meanwhile; any other failure is logged (each distinct one once
        a minute at most) and the loop goes on."""
        outages = OutageLog("webhook delivery", log, backoff_s=max(poll_s, 1.0))
        errors = RepeatedErrors("webhook delivery", log)
        while not stop.is_set():
            wait_s = poll_s
            try:
                sent = self.deliver_due()
                outages.succeeded(("database",))
                if between is not None:
                    between()
            except DEPENDENCY_ERRORS as exc:
                outages.failed(exc)
                sent, wait_s = 0, outages.backoff_s
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad pass
                errors.error(exc)
                sent = 0
            if not sent:
                stop.wait(wait_s)


def make_sender(settings: Settings, sessions: sessionmaker[Session]) -> WebhookSender:
    http = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False,
                        trust_env=False)
    return WebhookSender(sessions, http, WebhookPolicy.from_settings(settings),
                         settings.webhook_retry_schedule_s)
