"""The gateway's decisions that need no running service: which walk a ``model`` name means (and
that the walk rule agrees), and what a signed image link accepts. The whole gateway, through the
official SDK against the real stack, is tests/e2e/test_openai_gateway.py."""

from __future__ import annotations

import time

import pytest

from api.gateway import Target, find_name, parse_fallback, parse_wait, resolve
from api.image_links import ImageLinks, LinkRefused
from api.openai_errors import GatewayError
from providers.catalogue import PINNED_ROUTE, PREFERRED_ROUTE, load_catalogue
from scheduler.queue.jobs import JobQueue, JobRequest

CATALOGUE = load_catalogue()
DEFAULT = CATALOGUE.route("default").models


@pytest.mark.parametrize(("name", "target"), [
    (None, Target("route", "default")),
    ("auto", Target("route", "default")),
    ("seedream-4.5", Target("model", "seedream-4.5")),
    ("seedream-4-5-251128", Target("model", "seedream-4.5")),  # the vendor's id for it
    ("logo", Target("route", "logo")),
    ("dall-e-9", None),
])
def test_a_model_name_means_a_model_a_route_or_nothing(name: str | None,
                                                       target: Target | None) -> None:
    assert find_name(CATALOGUE, name) == target


@pytest.mark.parametrize(("name", "fallback", "recorded", "walk"), [
    ("seedream-4.5", True, (PREFERRED_ROUTE, "seedream-4.5"),
     ("seedream-4.5", *(m for m in DEFAULT if m != "seedream-4.5"))),
    ("seedream-4.5", False, (PINNED_ROUTE, "seedream-4.5"), ("seedream-4.5",)),
    ("logo", True, ("logo", "recraftv4_vector"), CATALOGUE.route("logo").models),
    ("logo", False, (PINNED_ROUTE, "recraftv4_vector"), ("recraftv4_vector",)),
    ("auto", True, ("default", DEFAULT[0]), DEFAULT),
])
def test_the_job_a_name_becomes_walks_what_the_walk_rule_says(
        name: str, fallback: bool, recorded: tuple[str, str], walk: tuple[str, ...]) -> None:
    queue = JobQueue(None, None, CATALOGUE)  # type: ignore[arg-type]  # resolving reads no state
    target = resolve(CATALOGUE, name, fallback)

    route, model = queue.resolve_route(JobRequest("a kite", **target.job_fields()))

    assert (route, model) == recorded
    assert tuple(m.id for m in CATALOGUE.models_for(route, model)) == walk


def test_an_unknown_model_is_openais_model_not_found() -> None:
    with pytest.raises(GatewayError) as caught:
        resolve(CATALOGUE, "dall-e-9", True)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        404, "model_not_found", "model")


def test_the_headers_take_what_is_documented_and_refuse_the_rest() -> None:
    assert parse_fallback(None) is True and parse_fallback("Default") is True
    assert parse_fallback("none") is False
    assert parse_wait(None, 120) == 120 and parse_wait("2.5", 120) == 2.5
    assert parse_wait("600", 120) == 120  # capped at the setting
    for bad_wait in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(GatewayError, match="x-imagequeue-wait"):
            parse_wait(bad_wait, 120)
    with pytest.raises(GatewayError, match="'default'.*'none'"):
        parse_fallback("sometimes")


def test_a_signed_link_opens_until_it_expires_and_never_once_altered() -> None:
    links = ImageLinks(b"secret", ttl_s=60)
    now = time.time()
    expires = int(now) + 60
    signature = links.signature("job_1", 0, expires)

    links.check("job_1", 0, expires, signature)
    for job_id, index, until, sig in [("job_2", 0, expires, signature),
                                      ("job_1", 1, expires, signature),
                                      ("job_1", 0, expires + 1, signature),
                                      ("job_1", 0, expires, signature[:-1] + "x"),
                                      ("job_1", 0, expires, "")]:
        with pytest.raises(LinkRefused) as refused:
            links.check(job_id, index, until, sig)
        assert refused.value.code == "invalid_signature"
    with pytest.raises(LinkRefused) as expired:
        past = int(now) - 1
        links.check("job_1", 0, past, links.signature("job_1", 0, past))
    assert expired.value.code == "link_expired"
    with pytest.raises(LinkRefused):  # another server's key
        ImageLinks(b"other", 60).check("job_1", 0, expires, signature)
