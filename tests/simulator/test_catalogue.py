"""Pointing a catalogue at the simulator: only the models that could not be called otherwise
are rewritten, and the catalogue file written for a stack loads as the same catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.catalogue import WIRE_FORMATS, load_catalogue
from simulator.catalogue import SIMULATOR_PREFIXES, point_at_simulator, write_simulator_catalogue

ALL_KEY_ENVS = ("GEMINI_API_KEY", "OPENAI_API_KEY", "BFL_API_KEY", "ARK_API_KEY",
                "RECRAFT_API_TOKEN", "AGGREGATOR_API_KEY")


@pytest.fixture()
def openai_key_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")


def test_only_models_without_a_key_are_pointed_at_the_simulator_and_made_keyless(
    openai_key_only: None,
) -> None:
    catalogue = load_catalogue()

    pointed = point_at_simulator(catalogue, "http://127.0.0.1:8100/")

    for model_id, original in catalogue.models.items():
        model = pointed.model(model_id)
        if original.api_key_env == "OPENAI_API_KEY":
            assert model == original and not model.keyless
        else:
            assert model.keyless and model.configured and model.missing_key_hint is None
            assert model.base_url == "http://127.0.0.1:8100" + SIMULATOR_PREFIXES[
                model.wire_format]
    assert pointed.model("seedream-4.5").base_url == "http://127.0.0.1:8100/ark/api/v3"
    assert pointed.routes == catalogue.routes
    assert catalogue.model("flux-2-pro").base_url == "https://api.bfl.ai/v1", "original untouched"


def test_the_simulator_serves_every_wire_format_a_catalogue_may_name() -> None:
    assert set(SIMULATOR_PREFIXES) == WIRE_FORMATS


def test_the_written_catalogue_file_loads_as_the_pointed_catalogue(
    openai_key_only: None, tmp_path: Path,
) -> None:
    source = tmp_path / "mine.toml"
    source.write_text(load_catalogue().source.read_text(encoding="utf-8"), encoding="utf-8")

    path = write_simulator_catalogue("http://127.0.0.1:8100", tmp_path / "sim" / "catalogue.json",
                                     source=source)
    loaded = load_catalogue(path)

    expected = point_at_simulator(load_catalogue(source), "http://127.0.0.1:8100")
    assert (loaded.models, loaded.routes) == (expected.models, expected.routes)
    assert not loaded.model("gpt-image-1.5").keyless
    assert loaded.model("flux-2-pro").keyless
