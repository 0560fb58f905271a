"""Turning a vendor's error answer into the taxonomy: one classifier for every wire format.

Vendors disagree on envelopes (Gemini ``{"error":{code:int,status,details}}``, OpenAI and Ark
``{"error":{code:str,message,type}}``, BFL ``{"detail": ...}``, gateways that stringify an
upstream body inside ``error.message``), so ``describe`` first flattens any of them into the
HTTP status, a list of machine codes and a message, and ``classify`` decides on those:

1. HTTP 402 is billing (AUTH), whatever the code says (Gemini's 402 RESOURCE_EXHAUSTED).
2. Machine codes, in precedence order content policy > auth > overloaded > quota > invalid >
   server (so ``insufficient_quota`` is billing, and Ark's ``ServerOverloaded`` 429 is overload).
3. Message hints for bodies without a useful code (Recraft): "overloaded", "safety system".
4. The HTTP status.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from providers.adapters.retry_hints import request_id_from, retry_after_from
from providers.errors import ErrorClass, ProviderError

_CONTENT_POLICY_CODES = ("sensitivecontentdetected", "moderation_blocked", "content_policy")
_AUTH_CODES = frozenset({
    "insufficient_quota", "insufficient_user_quota", "billing_hard_limit_reached",
    "accountoverdueerror", "accessdenied", "authenticationerror", "modelnotopen",
    "permission_denied", "unauthenticated", "api_key_invalid", "invalid_api_key",
})
_AUTH_CODE_PARTS = ("invalidendpoint",)
_OVERLOADED_CODE_PARTS = ("overload", "unavailable")
_QUOTA_CODE_PARTS = ("ratelimit", "rate_limit", "quotaexceeded", "resource_exhausted",
                     "requestbursttoofast", "slow_down", "too_many_requests")
_INVALID_CODES = frozenset({"invalidparameter", "missingparameter", "invalid_argument",
                            "failed_precondition"})
_SERVER_CODES = frozenset({"internal", "internalserviceerror", "server_error",
                           "deadline_exceeded"})
# Only these classes wait for the vendor; a hint on a 400 (OpenAI sends rate headers on every
# answer) would park a job for nothing.
_RETRY_HINTED = frozenset({ErrorClass.QUOTA, ErrorClass.OVERLOADED})
_OVERLOADED_WORDS = re.compile(r"overloaded|high demand|capacity", re.IGNORECASE)
_POLICY_WORDS = re.compile(
    r"safety system|moderat|nsfw|inappropriate|content polic|sensitive (content|information)",
    re.IGNORECASE,
)


@dataclass
class ErrorDescription:
    status: int | None
    codes: list[str] = field(default_factory=list)
    message: str = ""
    body: Any = None


def classify(status: int | None, codes: list[str], message: str) -> ErrorClass:
    lowered = [code.lower() for code in codes if code]
    if status == 402:
        return ErrorClass.AUTH
    if any(part in code for code in lowered for part in _CONTENT_POLICY_CODES):
        return ErrorClass.CONTENT_POLICY
    if any(code in _AUTH_CODES or any(p in code for p in _AUTH_CODE_PARTS) for code in lowered):
        return ErrorClass.AUTH
    if any(part in code for code in lowered for part in _OVERLOADED_CODE_PARTS):
        return ErrorClass.OVERLOADED
    if any(part in code for code in lowered for part in _QUOTA_CODE_PARTS):
        return ErrorClass.QUOTA
    if any(code in _INVALID_CODES for code in lowered):
        return ErrorClass.INVALID_REQUEST
    if any(code in _SERVER_CODES for code in lowered):
        return ErrorClass.SERVER_ERROR
    if (status is None or status >= 500) and _OVERLOADED_WORDS.search(message):
        return ErrorClass.OVERLOADED
    if status is not None and 400 <= status < 500 and _POLICY_WORDS.search(message):
        return ErrorClass.CONTENT_POLICY
    return classify_status(status)


def classify_status(status: int | None) -> ErrorClass:
    if status is None:
        return ErrorClass.SERVER_ERROR
    if status == 429:
        return ErrorClass.QUOTA
    if status in (401, 402, 403, 404):  # 404: the model id or endpoint is misconfigured
        return ErrorClass.AUTH
    if status in (503, 529):
        return ErrorClass.OVERLOADED
    if status in (408, 409, 499) or status >= 500:
        return ErrorClass.SERVER_ERROR
    if 400 <= status < 500:
        return ErrorClass.INVALID_REQUEST
    return ErrorClass.SERVER_ERROR


def describe(status: int | None, text: str) -> ErrorDescription:
    """Flatten any vendor error body; an upstream body stringified in the message wins."""
    try:
        body = json.loads(text)
    except ValueError:
        return ErrorDescription(status, [], _snippet(text))
    description = _describe_json(status, body)
    inner = _stringified_body(description.message)
    if inner is not None:
        nested = _describe_json(None, inner)
        inner_status = _int_code(inner)
        nested.status = inner_status if inner_status is not None else status
        nested.codes = nested.codes or description.codes
        return nested
    return description


def error_from_response(
    response: httpx.Response, model_id: str, *, request_id: str | None = None
) -> ProviderError:
    """The classified error for a non-success vendor answer."""
    description = describe(response.status_code, response.text)
    error_class = classify(description.status, description.codes, description.message)
    retry_after_s = (
        retry_after_from(response.headers, description.body, description.message)
        if error_class in _RETRY_HINTED else None
    )
    message = description.message or f"HTTP {response.status_code}"
    return ProviderError(
        error_class,
        f"{model_id}: {message}",
        vendor_status=response.status_code,
        vendor_code=next((code for code in description.codes if code), None),
        retry_after_s=retry_after_s,
        request_id=request_id or request_id_from(response.headers, description.message),
    )


def _describe_json(status: int | None, body: Any) -> ErrorDescription:
    if not isinstance(body, dict):
        return ErrorDescription(status, [], _snippet(json.dumps(body)), body)
    error = body.get("error", body)
    codes: list[str] = []
    if isinstance(error, str):  # {"error": "rate_limit_exceeded", "message": "..."}
        codes.append(error)
        error = body
    if not isinstance(error, dict):
        error = body
    for key in ("code", "status", "type"):
        value = error.get(key)
        if isinstance(value, str):
            codes.append(value)
    details = error.get("details")
    if isinstance(details, list):  # google.rpc ErrorInfo.reason, e.g. API_KEY_INVALID
        codes += [d["reason"] for d in details if isinstance(d, dict)
                  and isinstance(d.get("reason"), str)]
    message = _message_of(error) or _message_of(body)
    return ErrorDescription(status, codes, message, body)


def _message_of(error: dict[str, Any]) -> str:
    for key in ("message", "detail", "error", "msg"):
        value = error.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list):  # FastAPI validation errors: [{"loc", "msg", "type"}]
            parts = [_validation_item(item) for item in value]
            return "; ".join(part for part in parts if part)
    return ""


def _validation_item(item: Any) -> str:
    if isinstance(item, dict):
        location = ".".join(str(part) for part in item.get("loc", []) if part != "body")
        text = str(item.get("msg", ""))
        return f"{location}: {text}" if location else text
    return str(item)


def _stringified_body(message: str) -> Any | None:
    start = message.find("{")
    if start < 0:
        return None
    try:
        inner = json.loads(message[start:])
    except ValueError:
        return None
    return inner if isinstance(inner, dict) and ("error" in inner or "code" in inner) else None


def _int_code(body: dict[str, Any]) -> int | None:
    error = body.get("error", body)
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _snippet(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat[:limit] + ("…" if len(flat) > limit else "")
