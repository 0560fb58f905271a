"""The failover router: walk a job's candidate models in order until one produces an image.

A job-level error (invalid request, content policy) stops the walk: another model would refuse the
same prompt. Anything else moves on to the next candidate. Hooks see every attempt: ``before`` may
veto a model (the breaker, the vendor limits), ``after`` learns the outcome, and ``released``
runs once the call is over whatever happened (after ``after`` when there is an outcome), so a slot
taken in ``before`` is always given back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from providers.catalogue import Catalogue, ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GenerationRequest, GenerationResult

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
    """What a walk produced. With neither ``result`` nor ``error`` every candidate was denied or
    failed transiently: the job should wait and walk again."""

    attempts: list[AttemptRecord] = field(default_factory=list)
    result: GenerationResult | None = None
    served_by: str | None = None
    error: ProviderError | None = None
    last_failure: ProviderError | None = None

    @property
    def job_failed(self) -> bool:
        return self.error is not None and self.error.error_class.is_job_level


Caller = Callable[[ModelSpec, GenerationRequest], GenerationResult]


class AttemptHooks:
    """Called around every attempt; ``before`` may veto a model (returns the reason to skip)."""

    def before(self, index: int, model: ModelSpec) -> str | None:
        return None

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        return None

    def released(self, model: ModelSpec) -> None:
        """The call allowed by ``before`` is over (also when it raised something unexpected)."""
        return None


class CompositeHooks(AttemptHooks):
    """Several hooks as one: the first veto wins (later ``before`` hooks are not asked); a veto
    or an exception gives back what the earlier hooks took."""

    def __init__(self, hooks: Sequence[AttemptHooks]) -> None:
        self.hooks = list(hooks)

    def before(self, index: int, model: ModelSpec) -> str | None:
        for k, hook in enumerate(self.hooks):
            try:
                reason = hook.before(index, model)
            except BaseException:
                for earlier in reversed(self.hooks[:k]):
                    earlier.released(model)
                raise
            if reason is not None:
                for earlier in reversed(self.hooks[:k]):
                    earlier.released(model)
                return reason
        return None

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        for hook in self.hooks:
            hook.after(model, outcome, latency_s, error)

    def released(self, model: ModelSpec) -> None:
        for hook in reversed(self.hooks):
            hook.released(model)


def candidates(catalogue: Catalogue, route: str, requested_model: str | None) -> list[ModelSpec]:
    """The models a job walks, in order: ``Catalogue.models_for``, the rule the submit check and
    the ETA follow too."""
    return list(catalogue.models_for(route, requested_model))


def walk(models: list[ModelSpec], request: GenerationRequest, call: Caller,
         hooks: AttemptHooks | None = None) -> RouteOutcome:
    hooks = hooks or AttemptHooks()
    outcome = RouteOutcome()
    unservable: list[str] = []
    for index, model in enumerate(models):
        unfit = model.can_serve(request)
        if unfit is not None:
            unservable.append(unfit)
            outcome.attempts.append(AttemptRecord(model.id, time.time(), None, SKIPPED,
                                                  message=unfit))
            continue
        denied = hooks.before(index, model)
        if denied is not None:
            outcome.attempts.append(AttemptRecord(model.id, time.time(), None, SKIPPED,
                                                  message=denied))
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
            if exc.error_class.is_job_level:
                outcome.error = exc
                return outcome
            outcome.last_failure = exc
            continue
        else:
            latency_s = time.perf_counter() - clock
            hooks.after(model, SUCCESS, latency_s, None)
        finally:
            hooks.released(model)
        outcome.attempts.append(AttemptRecord(
            model.id, started, int(latency_s * 1000), SUCCESS, 200,
            result.request_id, result.cost_usd))
        outcome.result, outcome.served_by = result, model.id
        return outcome
    if len(unservable) == len(models):
        outcome.error = ProviderError(
            ErrorClass.INVALID_REQUEST, "no model on the route can serve this request: "
            + ("; ".join(unservable) or "the route has no models"))
    return outcome
