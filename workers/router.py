"""The failover router: walk a job's candidate models in order until one produces an image.

A job-level error (invalid request, content policy) stops the walk: another model would refuse the
same prompt. Anything else moves on to the next candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from providers.base import GenerationRequest, GenerationResult
from providers.catalogue import Catalogue, ModelSpec
from providers.errors import ErrorClass, ProviderError

SKIPPED = "skipped"
SUCCESS = "success"


@dataclass
class AttemptRecord:
    model: str
    started_at_s: float
    latency_ms: int | None
    outcome: str  # SUCCESS, SKIPPED or an ErrorClass value
    http_status: int | None = None
    request_id: str | None = None
    cost_usd: float = 0.0
    message: str | None = None


@dataclass
class RouteOutcome:
    attempts: list[AttemptRecord] = field(default_factory=list)
    result: GenerationResult | None = None
    served_by: str | None = None
    error: ProviderError | None = None


Caller = Callable[[ModelSpec, GenerationRequest], GenerationResult]


class AttemptHooks:
    """Called around every attempt; ``before`` may veto a model (returns the reason to skip)."""

    def before(self, index: int, model: ModelSpec) -> str | None:
        return None

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        return None


def candidates(catalogue: Catalogue, route: str, requested_model: str | None) -> list[ModelSpec]:
    if route not in catalogue.routes:  # a pinned model, or a route since removed
        return [catalogue.models[requested_model]] if requested_model in catalogue.models else []
    chain = catalogue.routes[route]
    models = [catalogue.models[m] for m in chain.models]
    return models if chain.allow_fallback else models[:1]


def walk(models: list[ModelSpec], request: GenerationRequest, call: Caller,
         hooks: AttemptHooks | None = None) -> RouteOutcome:
    hooks = hooks or AttemptHooks()
    outcome = RouteOutcome()
    for index, model in enumerate(models):
        reason = model.can_serve(request) or hooks.before(index, model)
        if reason is not None:
            outcome.attempts.append(
                AttemptRecord(model.id, time.time(), None, SKIPPED, message=reason))
            continue
        started = time.time()
        clock = time.perf_counter()
        try:
            result = call(model, request)
        except ProviderError as exc:
            latency_s = time.perf_counter() - clock
            hooks.after(model, exc.error_class.value, latency_s, exc)
            outcome.attempts.append(AttemptRecord(
                model.id, started, int(latency_s * 1000),
                exc.error_class.value, exc.vendor_status, exc.request_id, 0.0, exc.message))
            outcome.error = exc
            if exc.error_class.is_job_level:
                return outcome
            continue
        latency_s = time.perf_counter() - clock
        hooks.after(model, SUCCESS, latency_s, None)
        outcome.attempts.append(AttemptRecord(
            model.id, started, int(latency_s * 1000), SUCCESS, 200,
            result.request_id, result.cost_usd))
        outcome.result, outcome.served_by, outcome.error = result, model.id, None
        return outcome
    if outcome.error is None:
        outcome.error = ProviderError(
            ErrorClass.INVALID_REQUEST, "no model on the route can serve this request: "
            + "; ".join(a.message or a.model for a in outcome.attempts))
    return outcome
