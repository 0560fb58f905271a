"""BFL FLUX, asynchronous: submit ``POST /bfl/v1/{model}``, poll ``polling_url``, download the
signed ``result.sample`` URL (providers.md section 3).

Outcomes that the real API reports through the task (``ok``, moderation, ``no_image``: Ready
without a sample, ``bad_base64``: a sample that is no image, ``server_error:task``: status Error)
keep the call in flight until the task is done; the rest answer the submit. ``server_error:poll``
makes the first poll of an otherwise good task fail with a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.images import ImageSpec
from simulator.outcomes import Kind
from simulator.state import Call, Decision, SimState
from simulator.vendors.common import (
    COMMON_KINDS,
    JSON,
    base_url,
    garbage_html_response,
    image_bytes,
    json_response,
    read_json,
    request_id,
    serve_call,
    truncated_json_response,
)

TASK_KINDS = frozenset({Kind.OK, Kind.CONTENT_POLICY, Kind.PROMPT_BLOCKED, Kind.NO_IMAGE,
                        Kind.BAD_BASE64})
OUTPUT_FORMATS = {"jpeg", "png", "webp"}
MAX_PIXELS = 4 * 1024 * 1024
RETRY_AFTER_S = 7
TASK_TTL_S = 3600.0
MODERATION_DETAILS = {"Moderation Reasons": ["Content Moderated"]}


@dataclass
class Task:
    id: str
    model: str
    prompt: str
    seed: int
    spec: ImageSpec
    kind: Kind
    detail: str | None
    submitted_at: float  # loop time
    ready_at: float
    poll_fails: int = 0

    def status(self) -> str:
        if self.kind is Kind.CONTENT_POLICY:
            return "Content Moderated"
        if self.kind is Kind.PROMPT_BLOCKED:
            return "Request Moderated"
        if self.kind is Kind.SERVER_ERROR:
            return "Error"
        return "Ready"


def detail_error(loc: str, msg: str, type_: str) -> JSON:
    return {"detail": [{"loc": ["body", loc], "msg": msg, "type": type_}]}


def _validate(body: JSON | None) -> tuple[JSON | None, int, int, str]:
    """(422 body or None, width, height, output_format)."""
    if body is None:
        return detail_error("body", "Input should be a valid dictionary", "dict_type"), 0, 0, ""
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        return detail_error("prompt", "Field required", "missing"), 0, 0, ""
    output_format = str(body.get("output_format") or "jpeg")
    if output_format not in OUTPUT_FORMATS:
        return detail_error("output_format", "Input should be 'jpeg', 'png' or 'webp'",
                            "enum"), 0, 0, ""
    sizes: list[int] = []
    for name in ("width", "height"):
        value: Any = body.get(name, 1024)
        if not isinstance(value, int) or value < 64 or value % 16:
            return detail_error(name, "Input should be a multiple of 16, at least 64",
                                "value_error"), 0, 0, ""
        sizes.append(value)
    if sizes[0] * sizes[1] > MAX_PIXELS:
        return detail_error("width", "Image must be at most 4 megapixels",
                            "value_error"), 0, 0, ""
    return None, sizes[0], sizes[1], output_format


def _submit_error(kind: Kind, rid: str) -> Response:
    headers = {"x-request-id": rid}
    if kind is Kind.GARBAGE_HTML:
        return garbage_html_response(headers)
    if kind is Kind.QUOTA:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    table: dict[Kind, tuple[int, JSON]] = {
        Kind.OVERLOADED: (503, {"detail": "Service temporarily unavailable: high load."}),
        Kind.SERVER_ERROR: (500, {"detail": "Internal Server Error"}),
        Kind.DEADLINE: (502, {"detail": "Bad Gateway: upstream timed out"}),
        Kind.QUOTA: (429, {"detail": "You have exceeded the number of active tasks (24). "
                                     "Please wait for a task to finish."}),
        Kind.AUTH: (401, {"detail": "Invalid API key"}),
        Kind.BILLING: (402, {"detail": "Insufficient credits. Please add credits at "
                                       "https://dashboard.bfl.ai."}),
        Kind.INVALID_REQUEST: (422, detail_error("width", "Input should be a multiple of 16",
                                                 "value_error")),
    }
    status, body = table[kind]
    return json_response(body, status, headers)


def routes(state: SimState) -> list[Route]:
    tasks: dict[str, Task] = {}

    def sign(task_id: str, expires_at: int) -> str:
        message = f"{task_id}.{expires_at}".encode()
        return hmac.new(state.signing_key, message, hashlib.sha256).hexdigest()[:32]

    def forget_old_tasks(now: float) -> None:
        for task_id in [t.id for t in tasks.values() if now - t.ready_at > TASK_TTL_S]:
            del tasks[task_id]

    def start_task(call: Call, model: str, body: JSON, spec: ImageSpec) -> Task:
        loop = asyncio.get_running_loop()
        now = loop.time()
        decision = call.decision
        kind = decision.kind
        seed = body.get("seed")
        task = Task(id=request_id(), model=model, prompt=spec.prompt,
                    seed=seed if isinstance(seed, int) else state.rng.randrange(2**31),
                    spec=spec, kind=kind, detail=decision.detail, submitted_at=now,
                    ready_at=now + decision.latency_s,
                    poll_fails=1 if decision.detail == "poll" else 0)
        forget_old_tasks(now)
        tasks[task.id] = task
        loop.call_later(decision.latency_s, call.finish, 200)
        return task

    async def submit(request: Request) -> Response:
        model = request.path_params["model"]
        rid = request_id()
        body = await read_json(request)
        invalid, width, height, output_format = _validate(body)
        prompt = str((body or {}).get("prompt") or "")
        has_key = bool(request.headers.get("x-key"))
        forced = None if has_key and invalid is None else (
            Kind.AUTH if not has_key else Kind.INVALID_REQUEST)
        decision = state.decide(model, prompt, COMMON_KINDS, forced)
        failed_task = decision.kind is Kind.SERVER_ERROR and decision.detail == "task"
        if decision.kind is Kind.SERVER_ERROR and decision.detail == "poll":
            decision = Decision(Kind.OK, decision.detail, decision.latency_s)
        call = state.start_call("bfl", model, prompt, decision)
        if decision.kind in TASK_KINDS or failed_task:
            assert body is not None
            spec = ImageSpec(prompt, width, height, output_format,
                             corrupt=decision.kind is Kind.BAD_BASE64)
            task = start_task(call, model, body, spec)
            megapixels = round(width * height / 1e6, 2)
            return json_response({
                "id": task.id,
                "polling_url": f"{base_url(request)}/bfl/v1/get_result?id={task.id}",
                "cost": round(3.0 + 1.5 * max(0.0, megapixels - 1.0), 2),
                "input_mp": 0.0,
                "output_mp": megapixels,
            }, 200, {"x-request-id": rid})

        async def respond(final: Decision) -> Response:
            if not has_key:
                return json_response({"detail": "Not authenticated"}, 403, {"x-request-id": rid})
            if invalid is not None:
                return json_response(invalid, 422, {"x-request-id": rid})
            if final.kind is Kind.TRUNCATED_JSON:
                return truncated_json_response({"id": rid, "polling_url": f"{base_url(request)}"
                                                f"/bfl/v1/get_result?id={rid}", "cost": 3.0},
                                               {"x-request-id": rid})
            return _submit_error(final.kind, rid)

        return await serve_call(call, request, respond)

    async def get_result(request: Request) -> Response:
        if not request.headers.get("x-key"):
            return json_response({"detail": "Not authenticated"}, 403)
        task_id = request.query_params.get("id", "")
        task = tasks.get(task_id)
        if task is None:
            return json_response({"id": task_id, "status": "Task not found", "result": None,
                                  "progress": None, "details": None, "preview": None})
        if task.poll_fails > 0:
            task.poll_fails -= 1
            return json_response({"detail": "Internal Server Error"}, 500)
        now = asyncio.get_running_loop().time()
        if now < task.ready_at:
            span = max(task.ready_at - task.submitted_at, 1e-9)
            return json_response({"id": task.id, "status": "Pending", "result": None,
                                  "progress": round((now - task.submitted_at) / span, 2),
                                  "details": None, "preview": None})
        status = task.status()
        if status != "Ready":
            details = {"error": "Task failed"} if status == "Error" else MODERATION_DETAILS
            return json_response({"id": task.id, "status": status, "result": None,
                                  "progress": None, "details": details, "preview": None})
        expires_at = int(time.time() + state.profile.delivery_ttl_s)
        sample = (
            None if task.kind is Kind.NO_IMAGE else
            f"{base_url(request)}/bfl/delivery/{task.id}.{task.spec.output_format}"
            f"?exp={expires_at}&sig={sign(task.id, expires_at)}"
        )
        duration_s = round(task.ready_at - task.submitted_at, 3)
        return json_response({"id": task.id, "status": "Ready", "result": {
            "sample": sample, "prompt": task.prompt, "seed": task.seed,
            "start_time": round(time.time() - duration_s, 3), "end_time": round(time.time(), 3),
            "duration": duration_s}, "progress": None, "details": None, "preview": None})

    async def delivery(request: Request) -> Response:
        task_id = request.path_params["name"].partition(".")[0]
        task = tasks.get(task_id)
        try:
            expires_at = int(request.query_params.get("exp", ""))
        except ValueError:
            expires_at = 0
        good_sig = hmac.compare_digest(request.query_params.get("sig", ""),
                                       sign(task_id, expires_at))
        if task is None or not good_sig or time.time() > expires_at:
            reason = "Request has expired" if good_sig else "Signature does not match"
            return Response(f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied"
                            f"</Code><Message>{reason}</Message></Error>", 403,
                            media_type="application/xml")
        return Response(await image_bytes(task.spec), media_type=task.spec.content_type)

    return [
        Route("/bfl/v1/get_result", get_result, methods=["GET"]),
        Route("/bfl/v1/{model}", submit, methods=["POST"]),
        Route("/bfl/delivery/{name}", delivery, methods=["GET"]),
    ]
