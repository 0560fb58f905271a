"""Pointing a model catalogue at the simulator: where the simulator serves each wire format, the
rewrite, and the catalogue file the processes of a stack load (``IMGQ_CATALOGUE_PATH``).

    path = write_simulator_catalogue("http://127.0.0.1:8765", Path("var/sim-catalogue.json"))
"""

from __future__ import annotations

from pathlib import Path

from providers.catalogue import Catalogue, load_catalogue, save_catalogue

# Where the simulator serves each wire format, relative to its root URL.
SIMULATOR_PREFIXES: dict[str, str] = {
    "openai_images": "/openai/v1",
    "gemini": "/gemini",
    "bfl": "/bfl/v1",
    "seedream": "/ark/api/v3",
    "recraft": "/recraft/v1",
    "openai_compatible": "/aggregator/v1",
}


def point_at_simulator(catalogue: Catalogue, sim_url: str) -> Catalogue:
    """A copy of ``catalogue`` where every model that cannot be called as it is (no API key in
    the environment, and not keyless) calls the simulator at ``sim_url`` instead: its base URL
    becomes the simulator's path for its wire format, and it is keyless (the simulator needs no
    key). Models with a key keep calling their vendor."""
    root = sim_url.rstrip("/")
    models = {
        model_id: model if model.configured else model.model_copy(
            update={"base_url": root + SIMULATOR_PREFIXES[model.wire_format], "keyless": True})
        for model_id, model in catalogue.models.items()
    }
    return catalogue.model_copy(update={"models": models})


def write_simulator_catalogue(sim_url: str, path: Path, *, source: Path | None = None) -> Path:
    """Write the catalogue at ``source`` (the shipped one by default), pointed at the simulator
    at ``sim_url``, to ``path`` as JSON; returns ``path``, for ``IMGQ_CATALOGUE_PATH``. Which
    models keep their vendor is decided by the API keys in this process's environment, so give
    the stack's processes the same keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_catalogue(point_at_simulator(load_catalogue(source), sim_url), path)
