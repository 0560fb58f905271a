"""Contract: every adapter against the running vendor simulator (real HTTP over loopback).

The simulator forces an outcome with ``[sim:KIND]`` in the prompt; each KIND must reach the
router as the error class ``EXPECTED`` gives it. ``hang`` runs with the model's timeout cut to 0.5 s.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from providers.calls import call
from providers.catalogue import Catalogue, ModelSpec, load_catalogue
from providers.errors import ErrorClass, ProviderError
from providers.types import GenerationRequest
from simulator.catalogue import point_at_simulator

MODELS = ["gemini-3-pro-image-preview", "gemini-2.5-flash-image", "gpt-image-1.5", "flux-2-pro",
          "seedream-4.5", "recraftv4", "recraftv4_vector", "aggregator-seedream-4"]
EXPECTED = {
    "overloaded": ErrorClass.OVERLOADED,
    "server_error": ErrorClass.SERVER_ERROR,
    "deadline": ErrorClass.SERVER_ERROR,
    "hang": ErrorClass.TIMEOUT,
    "quota": ErrorClass.QUOTA,
    "auth": ErrorClass.AUTH,
    "billing": ErrorClass.AUTH,
    "invalid_request": ErrorClass.INVALID_REQUEST,
    "content_policy": ErrorClass.CONTENT_POLICY,
    "prompt_blocked": ErrorClass.CONTENT_POLICY,
    "no_image": ErrorClass.SERVER_ERROR,
    "garbage_html": ErrorClass.SERVER_ERROR,
    "truncated_json": ErrorClass.SERVER_ERROR,
    "bad_base64": ErrorClass.SERVER_ERROR,
}
KEY_ENVS = ("GEMINI_API_KEY", "OPENAI_API_KEY", "BFL_API_KEY", "ARK_API_KEY",
            "RECRAFT_API_TOKEN", "AGGREGATOR_API_KEY")


@pytest.fixture()
def catalogue(simulator: str, monkeypatch: pytest.MonkeyPatch) -> Catalogue:
    for name in KEY_ENVS:  # a developer's real key must never send these prompts to a vendor
        monkeypatch.delenv(name, raising=False)
    return point_at_simulator(load_catalogue(), simulator)


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as http:
        yield http


def simulated(catalogue: Catalogue, model_id: str, **changes: object) -> ModelSpec:
    model = catalogue.model(model_id).model_copy(update=changes)
    if model.wire_format == "bfl":  # poll briskly: the simulator's tasks finish in milliseconds
        model = model.model_copy(update={"options": {**model.options, "poll_interval_s": 0.05}})
    assert model.keyless and model.base_url.startswith("http://127.0.0.1:")
    return model


@pytest.mark.parametrize("model_id", MODELS)
def test_simulated_model_returns_a_verified_image_and_its_cost(
    catalogue: Catalogue, client: httpx.Client, model_id: str
) -> None:
    model = simulated(catalogue, model_id)

    result = call(client, model, GenerationRequest("a red fox in snow [sim:ok]"))

    assert len(result.images) == 1
    image = result.images[0]
    expected_type = "image/svg+xml" if "svg" in model.capabilities else "image/"
    assert image.content_type.startswith(expected_type)
    assert image.width > 0 and image.height > 0
    assert result.cost_usd == pytest.approx(model.price_per_image_usd)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
@pytest.mark.parametrize("model_id", MODELS)
def test_forced_outcome_reaches_the_router_as_its_class(
    catalogue: Catalogue, client: httpx.Client, model_id: str, kind: str
) -> None:
    model = simulated(catalogue, model_id, timeout_s=0.5 if kind == "hang" else 10.0)

    with pytest.raises(ProviderError) as caught:
        call(client, model, GenerationRequest(f"a red fox in snow [sim:{kind}]"))

    assert caught.value.error_class is EXPECTED[kind]
    if kind == "quota":
        assert caught.value.retry_after_s is None or caught.value.retry_after_s > 0


@pytest.mark.parametrize("model_id", ["gpt-image-1.5", "seedream-4.5"])
def test_partial_answer_keeps_the_good_images_and_bills_only_those(
    catalogue: Catalogue, client: httpx.Client, model_id: str
) -> None:
    model = simulated(catalogue, model_id)

    result = call(client, model, GenerationRequest("two foxes [sim:partial]", n=2))

    assert 1 <= len(result.images) <= 2
    assert result.cost_usd == pytest.approx(model.price_per_image_usd * len(result.images))


def test_gemini_quota_carries_the_vendors_retry_delay(
    catalogue: Catalogue, client: httpx.Client
) -> None:
    with pytest.raises(ProviderError) as caught:
        call(client, simulated(catalogue, "gemini-2.5-flash-image"),
             GenerationRequest("a fox [sim:quota]"))

    assert caught.value.error_class is ErrorClass.QUOTA
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 0


def test_unicode_prompt_survives_the_round_trip(catalogue: Catalogue, client: httpx.Client) -> None:
    result = call(client, simulated(catalogue, "gpt-image-1.5"),
                  GenerationRequest("雪の中の狐 🦊 «aquarelle» [sim:ok]"))

    assert len(result.images) == 1
