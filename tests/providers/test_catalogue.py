"""The catalogue: the shipped file loads; a bad file is rejected naming file, entry and reason;
models without keys are pointed at the simulator; ``can_serve`` explains what a model lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.base import GenerationRequest
from providers.catalogue import (
    SIMULATOR_PREFIXES,
    CatalogueError,
    load_catalogue,
)

ALL_KEY_ENVS = ("GEMINI_API_KEY", "OPENAI_API_KEY", "BFL_API_KEY", "ARK_API_KEY",
                "RECRAFT_API_TOKEN", "AGGREGATOR_API_KEY")
MINIMAL_MODEL = """
[[models]]
id = "m1"
vendor = "openai"
wire_format = "openai_images"
vendor_model = "gpt-image-1.5"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
price_per_image_usd = 0.05
"""


@pytest.fixture()
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_KEY_ENVS:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalogue.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_catalogue_has_the_documented_models_and_routes() -> None:
    catalogue = load_catalogue()

    assert {"gemini-3-pro-image-preview", "gemini-2.5-flash-image", "seedream-4.5",
            "gpt-image-1.5", "flux-2-pro", "recraftv4", "recraftv4_vector"} <= set(catalogue.models)
    assert catalogue.route("default").models == (
        "gemini-3-pro-image-preview", "gemini-2.5-flash-image", "seedream-4.5", "gpt-image-1.5",
        "flux-2-pro")
    assert catalogue.route("logo").models[0] == "recraftv4_vector"
    assert catalogue.route("fast").models[0] == "gemini-2.5-flash-image"
    assert catalogue.model("seedream-4.5").vendor_model == "seedream-4-5-251128"
    assert catalogue.model("seedream-4.5").options["watermark"] is False
    assert "image_size" in catalogue.model("gemini-3-pro-image-preview").capabilities
    assert all(m.base_url.startswith("https://") for m in catalogue.models.values())


@pytest.mark.parametrize(
    ("text", "entry", "reason"),
    [
        (MINIMAL_MODEL + "[routes.default\nmodels = []", "document", "bad TOML syntax"),
        (MINIMAL_MODEL.replace("openai_images", "telepathy"), "model 'm1'",
         "unknown wire_format 'telepathy'"),
        (MINIMAL_MODEL + MINIMAL_MODEL, "model 'm1'", "duplicate model id"),
        (MINIMAL_MODEL + '[routes.default]\nmodels = ["m1", "ghost"]\n', "route 'default'",
         "names unknown model 'ghost'"),
        (MINIMAL_MODEL.replace('api_key_env = "OPENAI_API_KEY"\n', ""), "model 'm1'",
         "missing or empty text field 'api_key_env'"),
        (MINIMAL_MODEL.replace("0.05", '"cheap"'), "model 'm1'", "price_per_image_usd"),
        (MINIMAL_MODEL + "timeout_s = -1\n", "model 'm1'", "timeout_s must be a number > 0"),
        (MINIMAL_MODEL + 'sizes = ["1024*1024"]\n', "model 'm1'", "sizes must be a list"),
        (MINIMAL_MODEL + "timout_s = 30\n", "model 'm1'", "unknown field(s) ['timout_s']"),
        (MINIMAL_MODEL + 'capabilities = ["telepathy"]\n', "model 'm1'", "unknown capability"),
        (MINIMAL_MODEL + '[routes.default]\nmodels = ["m1"]\nallow_fallback = "no"\n',
         "route 'default'", "allow_fallback must be true or false"),
        ('[[models]]\nvendor = "openai"\n', "models[0]", "missing or empty text field 'id'"),
    ],
    ids=["syntax", "wire-format", "duplicate", "unknown-route-model", "missing-field",
         "bad-price", "bad-timeout", "bad-size", "unknown-field", "unknown-capability",
         "bad-fallback", "no-id"],
)
def test_bad_catalogue_error_names_file_entry_and_reason(
    tmp_path: Path, text: str, entry: str, reason: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)

    assert (caught.value.source, caught.value.entry) == (str(path), entry)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: {entry}: ")


def test_route_may_disable_fallback(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_MODEL + '[routes.only]\nmodels = ["m1"]\nallow_fallback = false\n')

    assert load_catalogue(path).route("only").allow_fallback is False


def test_pointed_at_simulator_rewrites_only_models_without_a_key(
    no_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    catalogue = load_catalogue()

    simulated = catalogue.pointed_at_simulator("http://127.0.0.1:8100/")

    for model_id, original in catalogue.models.items():
        model = simulated.model(model_id)
        if original.api_key_env == "OPENAI_API_KEY":
            assert model == original and not model.simulated
        else:
            assert model.simulated and model.configured and model.missing_key_hint is None
            assert model.base_url == "http://127.0.0.1:8100" + SIMULATOR_PREFIXES[
                model.wire_format]
    assert simulated.model("seedream-4.5").base_url == "http://127.0.0.1:8100/ark/api/v3"
    assert "gpt-image-1.5" not in simulated.simulated_models
    assert catalogue.model("flux-2-pro").base_url == "https://api.bfl.ai/v1", "original untouched"


def test_unkeyed_model_is_not_configured_and_says_which_key_to_set(no_keys: None) -> None:
    model = load_catalogue().model("gpt-image-1.5")

    assert not model.configured
    assert model.missing_key_hint == "set OPENAI_API_KEY"


@pytest.mark.parametrize(
    ("model_id", "request_", "reason"),
    [
        ("gpt-image-1.5", GenerationRequest("x", 1024, 1024), None),
        ("gpt-image-1.5", GenerationRequest("x", 2048, 2048),
         "gpt-image-1.5 does not offer 2048x2048"),
        ("gpt-image-1.5", GenerationRequest("x", quality="hd"),
         "gpt-image-1.5 does not offer quality 'hd'"),
        ("gemini-2.5-flash-image", GenerationRequest("x", 4096, 4096),
         "gemini-2.5-flash-image does not offer 4096x4096"),
        ("gemini-3-pro-image-preview", GenerationRequest("x", 4096, 4096), None),
        ("gemini-3-pro-image-preview", GenerationRequest("x", n=2),
         "gemini-3-pro-image-preview returns at most 1 image(s) per call"),
        ("recraftv4_vector", GenerationRequest("x", vector=False),
         "recraftv4_vector produces only SVG"),
        ("recraftv4_vector", GenerationRequest("x"), None),
        ("recraftv4", GenerationRequest("x", vector=True), "recraftv4 does not produce SVG"),
        ("flux-2-pro", GenerationRequest("x", 4096, 1024), "flux-2-pro does not offer 4096x1024"),
    ],
)
def test_can_serve_explains_what_the_model_lacks(
    model_id: str, request_: GenerationRequest, reason: str | None
) -> None:
    model = load_catalogue().model(model_id)

    answer = model.can_serve(request_)

    if reason is None:
        assert answer is None
    else:
        assert answer is not None and answer.startswith(reason)

