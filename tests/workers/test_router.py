"""The route walk itself: what is skipped, where it stops, and what a pinned or no-fallback job
may use. Pure: the vendor call is a function that records who was asked."""

from __future__ import annotations

from providers.catalogue import PINNED_ROUTE, ModelSpec, Route, load_catalogue
from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult
from workers.router import SKIPPED, SUCCESS, candidates, walk


def vendor(failing: dict[str, ErrorClass]) -> tuple[list[str], object]:
    asked: list[str] = []

    def call(model: ModelSpec, request: GenerationRequest) -> GenerationResult:
        asked.append(model.id)
        if model.id in failing:
            raise ProviderError(failing[model.id], f"{model.id} says no", vendor_status=503)
        image = GeneratedImage(b"png", "image/png", request.width, request.height)
        return GenerationResult([image], request_id="r1", cost_usd=0.04)

    return asked, call


def test_a_model_that_cannot_serve_the_size_is_skipped_and_the_log_says_why() -> None:
    catalogue = load_catalogue()
    first, flash, seedream, *_ = catalogue.routes["default"].models
    asked, call = vendor({first: ErrorClass.OVERLOADED})
    request = GenerationRequest("a fox", width=4096, height=4096)
    outcome = walk(candidates(catalogue, "default", None), request, call)  # type: ignore[arg-type]
    assert [(a.model, a.outcome) for a in outcome.attempts] == [
        (first, "overloaded"), (flash, SKIPPED), (seedream, SUCCESS)]
    assert asked == [first, seedream]
    assert outcome.attempts[1].message == f"{flash} does not offer 4096x4096 (from 64x64 to 1536x1536)"


def test_the_walk_moves_on_after_an_overload_and_stops_at_the_first_image() -> None:
    catalogue = load_catalogue()
    first, second, *_ = catalogue.routes["default"].models
    asked, call = vendor({first: ErrorClass.OVERLOADED})
    outcome = walk(candidates(catalogue, "default", None), GenerationRequest("a fox"), call)  # type: ignore[arg-type]
    assert asked == [first, second]
    assert outcome.served_by == second
    assert [a.outcome for a in outcome.attempts] == ["overloaded", SUCCESS]


def test_a_job_level_error_stops_the_walk_at_once() -> None:
    catalogue = load_catalogue()
    first = catalogue.routes["default"].models[0]
    asked, call = vendor({first: ErrorClass.CONTENT_POLICY})
    outcome = walk(candidates(catalogue, "default", None), GenerationRequest("a fox"), call)  # type: ignore[arg-type]
    assert asked == [first]
    assert outcome.result is None and outcome.job_failed


def test_a_route_without_fallback_fails_rather_than_degrades() -> None:
    shipped = load_catalogue()
    strict = Route(models=shipped.routes["default"].models, allow_fallback=False)
    catalogue = shipped.model_copy(update={"routes": {**shipped.routes, "strict": strict}})
    first = strict.models[0]
    asked, call = vendor({first: ErrorClass.OVERLOADED})
    outcome = walk(candidates(catalogue, "strict", None), GenerationRequest("a fox"), call)  # type: ignore[arg-type]
    assert asked == [first]
    assert outcome.result is None and outcome.served_by is None


def test_a_pinned_job_only_ever_asks_its_model() -> None:
    catalogue = load_catalogue()
    models = candidates(catalogue, PINNED_ROUTE, "gpt-image-1.5")
    assert [m.id for m in models] == ["gpt-image-1.5"]
    asked, call = vendor({"gpt-image-1.5": ErrorClass.SERVER_ERROR})
    outcome = walk(models, GenerationRequest("a fox"), call)  # type: ignore[arg-type]
    assert asked == ["gpt-image-1.5"] and outcome.result is None


