"""Webhooks: private addresses are refused before any connection; deliveries are signed the
Standard Webhooks way, retried on failure and every attempt is recorded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from scheduler.webhooks import outbox
from scheduler.webhooks.outbox import WebhookPolicy, WebhookRefused, WebhookSender, vet_url
from storage.db import make_engine, make_sessionmaker
from storage.models import WebhookDelivery
from storage.tenants import create_tenant

LOOPBACK_OK = WebhookPolicy(allow_loopback=True)


class NoConnections(httpx.BaseTransport):
    """Fails the test if anything tries to open a connection."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a connection was attempted to {request.url}")


@pytest.mark.parametrize("url", [
    "http://10.0.0.5/hook", "http://192.168.1.10/hook", "http://169.254.169.254/latest/meta-data",
    "http://172.16.0.1/hook", "http://[fd00::1]/hook", "http://0.0.0.0/hook",
    "http://224.0.0.1/hook", "http://[::ffff:10.0.0.5]/hook", "http://100.64.0.1/hook",
])
def test_private_link_local_and_reserved_addresses_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused, match="public address"):
        vet_url(url, LOOPBACK_OK)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost:9/hook",
                                 "http://[::1]:9/hook"])
def test_loopback_is_refused_unless_the_operator_allows_it(url: str) -> None:
    with pytest.raises(WebhookRefused):
        vet_url(url, WebhookPolicy())
    assert vet_url(url, LOOPBACK_OK).address in ("127.0.0.1", "::1")


def test_a_hostname_is_judged_by_every_address_it_resolves_to() -> None:
    def resolve(host: str, port: int) -> list[str]:
        return {"mixed.example": ["93.184.215.14", "10.1.2.3"],
                "public.example": ["93.184.215.14"]}[host]

    with pytest.raises(WebhookRefused, match="10.1.2.3"):
        vet_url("https://mixed.example/hook", WebhookPolicy(), resolve)
    assert vet_url("https://public.example/hook", WebhookPolicy(), resolve).address == \
        "93.184.215.14"


def test_an_allowed_network_lets_a_private_address_through() -> None:
    import ipaddress

    policy = WebhookPolicy(allowed_networks=(ipaddress.ip_network("10.20.0.0/16"),))
    assert vet_url("http://10.20.3.4/hook", policy).address == "10.20.3.4"
    with pytest.raises(WebhookRefused):
        vet_url("http://10.21.3.4/hook", policy)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "/relative/path"])
def test_a_url_that_is_not_absolute_http_is_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        vet_url(url, LOOPBACK_OK)


def test_the_request_goes_to_the_vetted_address_keeping_host_and_tls_name() -> None:
    seen: list[httpx.Request] = []

    def resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    target = vet_url("https://hooks.example:8443/in?x=1", WebhookPolicy(), resolve)
    request = outbox.pinned_request(target, b"{}", {"webhook-id": "msg_1"})
    with httpx.Client(transport=httpx.MockTransport(
            lambda r: seen.append(r) or httpx.Response(204))) as client:
        client.send(request)
    assert seen[0].url.host == "93.184.215.14"
    assert seen[0].url.port == 8443 and seen[0].url.path == "/in"
    assert seen[0].headers["host"] == "hooks.example:8443"
    assert seen[0].extensions["sni_hostname"] == "hooks.example"


# --- delivery against a real database and a real receiver on 127.0.0.1 ---------------------


class Receiver:
    """A local HTTP server that answers with the queued statuses (then 200) and keeps requests."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture()
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def queue_delivery(sessions: sessionmaker[Session], url: str) -> tuple[str, str]:
    """A tenant and one pending delivery to ``url``; returns (delivery id, tenant secret)."""
    with sessions.begin() as session:
        tenant, _ = create_tenant(session, f"t-{time.monotonic_ns()}")
        delivery = outbox.enqueue(session, tenant_id=tenant.id, event_type="batch.completed",
                                    subject_id="batch_1", url=url, data={"id": "batch_1"})
        session.flush()
        return delivery.id, tenant.webhook_secret


def sender(sessions: sessionmaker[Session], transport: httpx.BaseTransport | None = None,
           schedule_s: tuple[float, ...] = (0.05, 0.05)) -> WebhookSender:
    return WebhookSender(sessions, httpx.Client(transport=transport, timeout=5), LOOPBACK_OK,
                         schedule_s)


def deliver_until_settled(send: WebhookSender, sessions: sessionmaker[Session], delivery_id: str,
                          timeout_s: float = 5.0) -> WebhookDelivery:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        send.deliver_due()
        with sessions() as session:
            delivery = session.get_one(WebhookDelivery, delivery_id)
            _ = delivery.attempts
        if delivery.status != "pending":
            return delivery
        time.sleep(0.02)
    raise AssertionError(f"delivery {delivery_id} still pending")


def test_delivery_is_signed_the_standard_webhooks_way(
        sessions: sessionmaker[Session], receiver: Receiver) -> None:
    delivery_id, secret = queue_delivery(sessions, receiver.url)
    delivery = deliver_until_settled(sender(sessions), sessions, delivery_id)
    assert delivery.status == "succeeded" and delivery.last_response_status == 200
    headers, body = receiver.requests[0]
    assert headers["webhook-id"] == delivery_id
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{delivery_id}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"].split(" ") == [f"v1,{expected}"]
    assert json.loads(body)["type"] == "batch.completed"
    assert json.loads(body)["data"] == {"id": "batch_1"}


def test_a_failing_receiver_is_retried_and_every_attempt_recorded(
        sessions: sessionmaker[Session], receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    delivery_id, _ = queue_delivery(sessions, receiver.url)
    delivery = deliver_until_settled(sender(sessions), sessions, delivery_id)
    assert delivery.status == "succeeded"
    assert [a.response_status for a in delivery.attempts] == [500, 503, 200]
    assert "HTTP 500" in (delivery.attempts[0].error or "")
    assert len({h["webhook-id"] for h, _ in receiver.requests}) == 1  # one id across retries


def test_a_delivery_fails_for_good_when_the_retry_schedule_runs_out(
        sessions: sessionmaker[Session], receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    delivery_id, _ = queue_delivery(sessions, receiver.url)
    delivery = deliver_until_settled(sender(sessions, schedule_s=(0.01,)), sessions, delivery_id)
    assert delivery.status == "failed"
    assert delivery.attempts_count == 2 and len(receiver.requests) == 2


def test_a_private_webhook_is_refused_at_delivery_without_any_connection(
        sessions: sessionmaker[Session]) -> None:
    delivery_id, _ = queue_delivery(sessions, "http://169.254.169.254/latest/meta-data")
    send = sender(sessions, NoConnections(), schedule_s=())
    delivery = deliver_until_settled(send, sessions, delivery_id)
    assert delivery.status == "failed"
    assert "refused" in (delivery.attempts[0].error or "")
    assert delivery.attempts[0].response_status is None


def test_a_delivered_webhook_is_not_sent_again_by_another_sender(
        sessions: sessionmaker[Session], receiver: Receiver) -> None:
    delivery_id, _ = queue_delivery(sessions, receiver.url)
    first, second = sender(sessions), sender(sessions)
    done = [first.deliver_due(), second.deliver_due()]
    assert sorted(done) == [0, 1]
    assert len(receiver.requests) == 1
