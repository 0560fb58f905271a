"""``GET /v1/models`` and ``GET /v1/models/{id}`` in OpenAI's shape: every catalogue model and
every route, each with its capabilities, price per image and health now (the breaker's state
and colour, ``api/breakers.py``). ``client.models.list()`` of the OpenAI SDKs reads it as is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.breakers import status_fields
from api.deps import ServicesDep, TenantDep
from api.gateway import find_name
from api.openai_errors import GatewayError, OpenAIRoute, documented
from api.openai_schemas import ModelEntry, ModelList
from api.services import Services
from breaker import Colour
from providers.catalogue import Catalogue
from scheduler.job_spec import shown

router = APIRouter(tags=["openai"], route_class=OpenAIRoute)
ROUTE_OWNER = "imagequeue"


def created_of(catalogue: Catalogue) -> int:
    try:
        return int(catalogue.source.stat().st_mtime)
    except OSError:
        return 0


class Health:
    """Each model's breaker fields, read once per answer (``status_fields``: None while Redis is
    unreachable)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._seen: dict[str, dict[str, str | None]] = {}

    def of(self, model_id: str) -> dict[str, str | None]:
        if model_id not in self._seen:
            self._seen[model_id] = status_fields(self.svc.breakers, model_id)
        return self._seen[model_id]


def model_entry(svc: Services, model_id: str, health: Health) -> ModelEntry:
    model = svc.catalogue.models[model_id]
    fields = health.of(model_id)
    return ModelEntry(
        id=model.id, created=created_of(svc.catalogue), owned_by=model.vendor, kind="model",
        vendor_model=model.vendor_model, capabilities=sorted(model.capabilities),
        price_per_image_usd=model.price_per_image_usd, sizes=list(model.sizes),
        max_images_per_call=model.max_images_per_call, configured=model.configured,
        breaker_state=fields["breaker_state"], health=fields["health"])


def route_entry(svc: Services, name: str, health: Health) -> ModelEntry:
    route = svc.catalogue.routes[name]
    first = svc.catalogue.models[route.models[0]]
    walked = [m.id for m in svc.catalogue.models_for(name, first.id)]
    colours = [health.of(m)["health"] for m in walked]
    serving = next((m for m, c in zip(walked, colours, strict=True)
                    if c is not None and c != Colour.RED), None)
    if colours[0] is None:
        colour = None  # Redis unreachable: no figure rather than a guess
    elif serving == walked[0]:
        colour = Colour.GREEN.value if colours[0] == Colour.GREEN else Colour.YELLOW.value
    else:
        colour = Colour.YELLOW.value if serving is not None else Colour.RED.value
    return ModelEntry(
        id=name, created=created_of(svc.catalogue), owned_by=ROUTE_OWNER, kind="route",
        capabilities=sorted(first.capabilities), price_per_image_usd=first.price_per_image_usd,
        models=list(route.models), allow_fallback=route.allow_fallback, serving_model=serving,
        breaker_state=health.of(first.id)["breaker_state"], health=colour)


@router.get("/v1/models", response_model=ModelList, response_model_exclude_none=False,
            responses=documented(401, 429, 503))
def list_models(tenant: TenantDep, svc: ServicesDep) -> ModelList:
    """Every model of the catalogue, then every route, with capabilities, price and health."""
    health = Health(svc)
    return ModelList(data=[*(model_entry(svc, m, health) for m in svc.catalogue.models),
                           *(route_entry(svc, r, health) for r in svc.catalogue.routes)])


@router.get("/v1/models/{model_id:path}", response_model=ModelEntry,
            responses=documented(401, 404, 429, 503))
def get_model(model_id: Annotated[str, Path(description="Any name `model` takes: a model id, "
                                                        "its vendor's id, a route or `auto`.")],
              tenant: TenantDep, svc: ServicesDep) -> ModelEntry:
    """One model or route, by any name `POST /v1/images/generations` takes as `model`; the
    entry it resolves to (its `id` is the catalogue's name)."""
    target = find_name(svc.catalogue, model_id)
    if target is None:
        raise GatewayError(404, f"The model '{shown(model_id)}' does not exist.",
                           code="model_not_found", param="model")
    health = Health(svc)
    if target.kind == "model":
        return model_entry(svc, target.name, health)
    return route_entry(svc, target.name, health)
