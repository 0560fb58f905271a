"""The catalogue: the shipped file loads; a bad file is rejected naming file, entry and reason;
a JSON file of the same schema loads too; ``can_serve`` explains what a model lacks; and
``models_for`` is the one rule for the models a job walks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.catalogue import (
    DEFAULT_CATALOGUE_PATH,
    PINNED_ROUTE,
    PREFERRED_ROUTE,
    CatalogueError,
    ModelSpec,
    Route,
    load_catalogue,
    save_catalogue,
)
from providers.types import GenerationRequest

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
DEFAULT_ROUTE = '[routes.default]\nmodels = ["m1"]\n'


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
         "wire_format: unknown value 'telepathy' (known: 'openai_images', "),
        (MINIMAL_MODEL + MINIMAL_MODEL, "model 'm1'", "duplicate model id"),
        (MINIMAL_MODEL + '[routes.default]\nmodels = ["m1", "ghost"]\n', "route 'default'",
         "names unknown model 'ghost'"),
        (MINIMAL_MODEL.replace('api_key_env = "OPENAI_API_KEY"\n', ""), "model 'm1'",
         "missing field(s) ['api_key_env']"),
        (MINIMAL_MODEL.replace("0.05", '"cheap"'), "model 'm1'",
         "price_per_image_usd: Input should be a valid number (got 'cheap')"),
        (MINIMAL_MODEL + "timeout_s = -1\n", "model 'm1'",
         "timeout_s: Input should be greater than 0 (got -1)"),
        (MINIMAL_MODEL + 'sizes = ["1024*1024"]\n', "model 'm1'",
         'sizes[0]: expected "WxH", such as "1024x1024" (got \'1024*1024\')'),
        (MINIMAL_MODEL + "timout_s = 30\n", "model 'm1'", "unknown field(s) ['timout_s']"),
        (MINIMAL_MODEL + 'capabilities = ["telepathy"]\n', "model 'm1'",
         "capabilities[0]: unknown value 'telepathy'"),
        (MINIMAL_MODEL + "max_concurrency = 2.5\n", "model 'm1'",
         "max_concurrency: Input should be a valid integer (got 2.5)"),
        (MINIMAL_MODEL.replace("https://api.openai.com/v1", "api.openai.com"), "model 'm1'",
         "base_url: not an http(s) URL (got 'api.openai.com')"),
        (MINIMAL_MODEL + '[routes.default]\nmodels = ["m1"]\nallow_fallback = "no"\n',
         "route 'default'", "allow_fallback: Input should be a valid boolean (got 'no')"),
        (MINIMAL_MODEL + '[routes.default]\nmodels = ["m1"]\nfallback = false\n',
         "route 'default'", "unknown field(s) ['fallback']"),
        (MINIMAL_MODEL + "[routes.default]\nmodels = []\n", "route 'default'",
         "models: expected at least 1 item(s)"),
        ('[[models]]\nvendor = "openai"\n', "models[0]", "missing field(s) ['id', "),
        ("models = []\n", "document", "models: expected at least 1 item(s)"),
        (MINIMAL_MODEL + DEFAULT_ROUTE + "[limits]\n", "document", "unknown field(s) ['limits']"),
        (MINIMAL_MODEL + '[routes.fast]\nmodels = ["m1"]\n', "routes", "no 'default' route"),
        (MINIMAL_MODEL + DEFAULT_ROUTE + f'[routes.{PINNED_ROUTE}]\nmodels = ["m1"]\n',
         f"route '{PINNED_ROUTE}'", "the name is reserved for the jobs that name a model"),
        (MINIMAL_MODEL + DEFAULT_ROUTE + f'[routes.{PREFERRED_ROUTE}]\nmodels = ["m1"]\n',
         f"route '{PREFERRED_ROUTE}'", "the name is reserved for the jobs that name a model"),
    ],
    ids=["syntax", "wire-format", "duplicate", "unknown-route-model", "missing-field",
         "bad-price", "bad-timeout", "bad-size", "unknown-field", "unknown-capability",
         "float-count", "bad-url", "bad-fallback", "unknown-route-field", "empty-route", "no-id",
         "no-models", "unknown-top-level", "no-default-route", "reserved-route-name",
         "reserved-preferred-name"],
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
    path = write(tmp_path, MINIMAL_MODEL + DEFAULT_ROUTE
                 + '[routes.only]\nmodels = ["m1"]\nallow_fallback = false\n')

    assert load_catalogue(path).route("only").allow_fallback is False


def test_a_catalogue_without_a_default_route_is_refused_when_it_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_MODEL + '[routes.fast]\nmodels = ["m1"]\n')

    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)

    assert str(caught.value).startswith(f"{path}: routes: no 'default' route")


def test_a_saved_catalogue_is_a_json_catalogue_file_that_loads_back_equal(tmp_path: Path) -> None:
    shipped = load_catalogue()

    path = save_catalogue(shipped, tmp_path / "catalogue.json")
    loaded = load_catalogue(path)

    assert json.loads(path.read_text(encoding="utf-8"))["routes"]["default"]["models"][0] == (
        shipped.route("default").models[0])
    assert (loaded.models, loaded.routes, loaded.source) == (shipped.models, shipped.routes, path)


@pytest.mark.parametrize(
    ("text", "entry", "reason"),
    [
        ('{"models": [', "document", "bad JSON syntax"),
        ("[]", "document", "expected a JSON object"),
        (json.dumps({"models": [{"id": "m1", "vendor": "openai", "wire_format": "bfl",
                                 "vendor_model": "x", "base_url": "https://x", "api_key_env": "K",
                                 "price_per_image_usd": 0.1, "timeout_s": "30"}],
                     "routes": {"default": {"models": ["m1"]}}}),
         "model 'm1'", "timeout_s: Input should be a valid number (got '30')"),
    ],
    ids=["syntax", "not-an-object", "string-for-number"],
)
def test_a_bad_json_catalogue_names_file_entry_and_reason(
    tmp_path: Path, text: str, entry: str, reason: str
) -> None:
    path = tmp_path / "catalogue.json"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(CatalogueError) as caught:
        load_catalogue(path)

    assert (caught.value.source, caught.value.entry) == (str(path), entry)
    assert reason in caught.value.reason


def test_a_keyless_model_needs_no_key_variable_and_is_configured_without_one(
    tmp_path: Path, no_keys: None
) -> None:
    local = MINIMAL_MODEL.replace('api_key_env = "OPENAI_API_KEY"\n', "keyless = true\n")
    path = write(tmp_path, local + DEFAULT_ROUTE)

    model = load_catalogue(path).model("m1")

    assert (model.keyless, model.api_key(), model.configured, model.missing_key_hint) == (
        True, None, True, None)


def test_the_shipped_models_all_need_a_key() -> None:
    assert not any(model.keyless for model in load_catalogue(DEFAULT_CATALOGUE_PATH).models.values())


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



def ids(models: tuple[ModelSpec, ...]) -> list[str]:
    return [model.id for model in models]


def test_a_job_on_a_route_walks_its_chain_and_only_its_first_model_without_fallback() -> None:
    shipped = load_catalogue()
    strict = Route(models=shipped.route("logo").models, allow_fallback=False)
    catalogue = shipped.model_copy(update={"routes": {**shipped.routes, "strict": strict}})

    assert ids(catalogue.models_for("logo", "recraftv4_vector")) == list(shipped.route("logo").models)
    assert ids(catalogue.models_for("strict", "recraftv4_vector")) == ["recraftv4_vector"]


def test_a_pinned_job_walks_its_model_only_and_nothing_once_the_model_is_gone() -> None:
    catalogue = load_catalogue()

    assert ids(catalogue.models_for(PINNED_ROUTE, "aggregator-seedream-4")) == [
        "aggregator-seedream-4"]
    assert catalogue.models_for(PINNED_ROUTE, "retired-model") == ()


def test_a_job_that_names_a_model_with_fallback_walks_it_then_the_default_routes_others() -> None:
    shipped = load_catalogue()
    default = list(shipped.route("default").models)
    seedream = "seedream-4.5"  # third on the default route: it moves to the front

    assert ids(shipped.models_for(PREFERRED_ROUTE, seedream)) == [
        seedream, *(m for m in default if m != seedream)]
    assert ids(shipped.models_for(PREFERRED_ROUTE, "recraftv4")) == ["recraftv4", *default]
    assert ids(shipped.models_for(PREFERRED_ROUTE, "retired-model")) == default
    strict = shipped.model_copy(update={"routes": {
        **shipped.routes, "default": Route(models=tuple(default), allow_fallback=False)}})
    assert ids(strict.models_for(PREFERRED_ROUTE, seedream)) == [seedream]


def test_a_job_on_a_route_since_removed_walks_the_default_route_by_the_same_rule() -> None:
    shipped = load_catalogue()
    default = shipped.route("default")

    assert ids(shipped.models_for("retired", "recraftv4_vector")) == list(default.models)
    strict = shipped.model_copy(update={"routes": {
        **shipped.routes, "default": Route(models=default.models, allow_fallback=False)}})
    assert ids(strict.models_for("retired", None)) == [default.models[0]]
