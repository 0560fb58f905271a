"""Black Forest Labs FLUX (flux-2-pro): submit, poll the returned ``polling_url``, download.

Retry rules follow BFL's own SDK: a failed SUBMIT is never resubmitted (it may already be
billed; the router moves on instead), while transport errors, 5xx and 429 while POLLING are
retried with backoff (tenacity), all within the model's ``timeout_s`` from submit to image.
Only the ``polling_url`` BFL returns is polled: it carries the region that holds the task.
The task is handed to ``TaskHooks.submitted`` the moment BFL returns it, so that a job whose
worker dies while polling resumes the same task (``TaskHooks.resume``) instead of paying again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base

from providers.adapters.classify import error_from_response
from providers.adapters.common import HttpAdapter, api_key_for, option, post_json, success_json
from providers.adapters.images import download_image
from providers.adapters.retry_hints import request_id_from
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GenerationRequest, GenerationResult, TaskHooks, VendorTask

SIZE_STEP = 16
_MODERATED = frozenset({"Request Moderated", "Content Moderated"})
_FAILED = frozenset({"Error", "Task not found", "Failed"})


class _RetryablePollAnswer(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class _StopNearDeadline(stop_base):
    def __init__(self, deadline: float, margin_s: float) -> None:
        self.deadline = deadline
        self.margin_s = margin_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() + self.margin_s >= self.deadline


def snap_dimension(value: int, low: int, high: int) -> int:
    """Nearest multiple of 16 (ties up) within [low, high], both rounded inwards to multiples."""
    low_step = math.ceil(low / SIZE_STEP) * SIZE_STEP
    high_step = math.floor(high / SIZE_STEP) * SIZE_STEP
    return max(low_step, min(high_step, math.floor(value / SIZE_STEP + 0.5) * SIZE_STEP))


@dataclass(frozen=True)
class _SubmittedTask(VendorTask):
    cost: float | None = None  # BFL credits, from the submit answer


class BflAdapter(HttpAdapter):
    wire_format = "bfl"

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._sleep = sleep

    def _generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest
    ) -> GenerationResult:
        return self._call(client, model, request, TaskHooks())

    def _call(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest,
        tasks: TaskHooks,
    ) -> GenerationResult:
        key = api_key_for(model)
        deadline = time.monotonic() + model.timeout_s
        task = tasks.resume or self._submit(client, model, request, key, tasks)
        result = self._wait_until_ready(client, model, task.polling_url, key, deadline,
                                        task.task_id)
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str):
            raise ProviderError(
                ErrorClass.SERVER_ERROR, f"{model.id}: Ready task without result.sample",
                request_id=task.task_id,
            )
        image = download_image(client, model.id, sample, _remaining_timeout(model, deadline))
        return GenerationResult(images=[image], request_id=task.task_id,
                                vendor_cost=task.cost if isinstance(task, _SubmittedTask) else None)

    def _submit(self, client: httpx.Client, model: ModelSpec, request: GenerationRequest,
                key: str, tasks: TaskHooks) -> VendorTask:
        url = f"{model.base_url.rstrip('/')}/{model.vendor_model}"
        submitted = post_json(client, model, url, self.body(model, request), {"x-key": key})
        answer = success_json(submitted, model, request_id=request_id_from(submitted.headers))
        task_id = str(answer["id"]) if answer.get("id") else None
        polling_url = answer.get("polling_url")
        if not isinstance(polling_url, str) or not polling_url:
            raise ProviderError(
                ErrorClass.SERVER_ERROR, f"{model.id}: submit answer has no polling_url",
                request_id=task_id,
            )
        cost = answer.get("cost")
        task = _SubmittedTask(task_id, polling_url,
                              float(cost) if isinstance(cost, int | float) else None)
        tasks.submitted(task)
        return task

    @staticmethod
    def body(model: ModelSpec, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "width": snap_dimension(request.width, model.min_width, model.max_width),
            "height": snap_dimension(request.height, model.min_height, model.max_height),
        }
        for name in ("safety_tolerance", "output_format", "seed"):
            if name in model.options:
                body[name] = model.options[name]
        return body

    def _wait_until_ready(
        self, client: httpx.Client, model: ModelSpec, polling_url: str, key: str,
        deadline: float, task_id: str | None,
    ) -> Any:
        interval_s = min(option(model, "poll_interval_s", 0.5), model.timeout_s / 10)
        while True:
            answer = self._poll_once(client, model, polling_url, key, deadline, interval_s)
            status = answer.get("status")
            if status == "Ready":
                return answer.get("result")
            if status in _MODERATED:
                raise ProviderError(
                    ErrorClass.CONTENT_POLICY, f"{model.id}: {status}",
                    vendor_status=200, vendor_code=str(status), request_id=task_id,
                )
            if status != "Pending":
                raise ProviderError(
                    ErrorClass.SERVER_ERROR, f"{model.id}: task ended with status {status!r}",
                    vendor_status=200, vendor_code=str(status), request_id=task_id,
                )
            if time.monotonic() + interval_s >= deadline:
                raise ProviderError(
                    ErrorClass.TIMEOUT,
                    f"{model.id}: task not ready within {model.timeout_s:g}s",
                    request_id=task_id,
                )
            self._sleep(interval_s)

    def _poll_once(
        self, client: httpx.Client, model: ModelSpec, polling_url: str, key: str,
        deadline: float, interval_s: float,
    ) -> dict[str, Any]:
        retrying = Retrying(
            retry=retry_if_exception_type((httpx.TransportError, _RetryablePollAnswer)),
            stop=stop_after_attempt(option(model, "poll_retry_attempts", 3))
            | _StopNearDeadline(deadline, interval_s),
            wait=wait_exponential(multiplier=interval_s, max=8 * interval_s),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = client.get(
                        polling_url, headers={"x-key": key},
                        timeout=_remaining_timeout(model, deadline),
                    )
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _RetryablePollAnswer(response)
        except _RetryablePollAnswer as exc:
            raise error_from_response(exc.response, model.id) from None
        if response.status_code == 404:  # the task, not the model, is unknown
            raise ProviderError(
                ErrorClass.SERVER_ERROR, f"{model.id}: polled task not found (HTTP 404)",
                vendor_status=404,
            )
        return success_json(response, model)


def _remaining_timeout(model: ModelSpec, deadline: float) -> httpx.Timeout:
    remaining_s = max(0.05, deadline - time.monotonic())
    return httpx.Timeout(remaining_s, connect=min(model.connect_timeout_s, remaining_s))
