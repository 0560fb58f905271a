"""Every vendor error answer lands in the right class (bodies copied from providers.md).

Matrix, adapter x class. T = this module (documented vendor answers), C = test_adapters_common
(all six formats), F = test_adapters_formats, S = test_adapters_simulator (live simulator).

                    overloaded server_error timeout quota+retry auth/billing invalid policy
  gemini                T,S       T,S          C,S     T,S         T,S          T,S    T,S
  openai_images         T,S       T,S          C,S     T,S         T,S          T,S    T,S
  bfl                   T,S       F,S          F,C,S   T,S         T,S          T,S    F,S
  seedream              T,S       T,S          C,S     T,S         T,S          T,S    T,F,S
  recraft               T,S       T,S          C,S     T,S         T,S          T,S    T,S
  openai_compatible     T,S       T,S          C,S     T,S         T,S          T,S    T,S

                    success  no image(200)  garbage_html  truncated_json  bad_base64  unicode
  every adapter      C,S        C,T,S          C,S           C,S           C,F,S        C

Answers used per adapter (T):
  gemini      503 UNAVAILABLE "high demand"; 500 INTERNAL; 504 DEADLINE_EXCEEDED; 429 RetryInfo
              "26s" and "Please retry in 25.46s"; 402 RESOURCE_EXHAUSTED; 400 API_KEY_INVALID;
              403; 404 NOT_FOUND; 400 INVALID_ARGUMENT / FAILED_PRECONDITION; 200 blockReason,
              finishReason IMAGE_SAFETY / PROHIBITED_CONTENT (policy), NO_IMAGE / IMAGE_OTHER /
              text only (server_error).
  openai      503 server_is_overloaded; 500 server_error; 429 with retry-after-ms, retry-after,
              x-ratelimit-reset-requests, "try again in 6s"; 429 insufficient_quota (billing);
              401; 400; 400 moderation_blocked, content_policy_violation.
  bfl         submit 503 / 402 / 403 / 429 Retry-After / 400 / 422 detail list (never resent);
              poll Request|Content Moderated, Error, Task not found, 5xx retried (F).
  seedream    429 ServerOverloaded (overloaded!); 429 RateLimitExceeded.*, QuotaExceeded;
              400 *SensitiveContentDetected*; 403 AccountOverdueError; 401; 404 ModelNotOpen;
              400 InvalidParameter / MissingParameter; 500 InternalServiceError.
  recraft     503 {"detail"}; 500 {"message"}; 429 {"code"} + Retry-After; 401 {"error"}; 402;
              400 {"code","message"}; 400 "inappropriate content" (policy).
  aggregator  upstream Gemini 503 / 429 / 400 stringified in error.message of an outer 500
              (classified by the inner body); 403 insufficient_user_quota; 502 new_api_error;
              400 moderation_blocked; request id read from "(request id: ...)".
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from providers.calls import call
from providers.errors import ErrorClass, ProviderError
from providers.types import GenerationRequest
from tests.providers.vendor_answers import FakeVendor, model

GEMINI_503 = {"error": {"code": 503, "message": "This model is currently experiencing high "
              "demand. Spikes in demand are usually temporary. Please try again later.",
                        "status": "UNAVAILABLE"}}
GEMINI_429 = {"error": {"code": 429, "message": "You exceeded your current quota, please check "
              "your plan and billing details.", "status": "RESOURCE_EXHAUSTED", "details": [
                  {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                  {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]}}
GEMINI_400_KEY = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API "
                  "key.", "status": "INVALID_ARGUMENT", "details": [
                      {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                       "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}


def oai(code: str | None, message: str, type_: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def ark(code: str, message: str, type_: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": f"{message} Request id: 0217abc", "param": "",
                      "type": type_}}


def wrapped(inner: dict[str, Any], outer_status: int = 500) -> dict[str, Any]:
    """An aggregator's outer envelope with the upstream body stringified inside the message."""
    return {"error": {"message": json.dumps(inner), "code": outer_status,
                      "status": "Internal Server Error"}}


# (wire format, HTTP status, body, headers, expected class, expected retry_after_s)
ERROR_ANSWERS = [
    ("gemini", 503, GEMINI_503, {}, ErrorClass.OVERLOADED, None),
    ("gemini", 500, {"error": {"code": 500, "message": "An internal error has occurred.",
                               "status": "INTERNAL"}}, {}, ErrorClass.SERVER_ERROR, None),
    ("gemini", 504, {"error": {"code": 504, "message": "Deadline expired before operation could "
                               "complete.", "status": "DEADLINE_EXCEEDED"}}, {},
     ErrorClass.SERVER_ERROR, None),
    ("gemini", 429, GEMINI_429, {}, ErrorClass.QUOTA, 26.0),
    ("gemini", 429, {"error": {"code": 429, "message": "Resource exhausted. Please retry in "
                               "25.465784708s.", "status": "RESOURCE_EXHAUSTED"}}, {},
     ErrorClass.QUOTA, 25.465784708),
    ("gemini", 402, {"error": {"code": 402, "message": "Your prepayment credits are depleted.",
                               "status": "RESOURCE_EXHAUSTED"}}, {}, ErrorClass.AUTH, None),
    ("gemini", 400, GEMINI_400_KEY, {}, ErrorClass.AUTH, None),
    ("gemini", 403, {"error": {"code": 403, "message": "Permission denied.",
                               "status": "PERMISSION_DENIED"}}, {}, ErrorClass.AUTH, None),
    ("gemini", 404, {"error": {"code": 404, "message": "models/gemini-x is not found for API "
                               "version v1beta", "status": "NOT_FOUND"}}, {}, ErrorClass.AUTH, None),
    ("gemini", 400, {"error": {"code": 400, "message": "Invalid JSON payload received.",
                               "status": "INVALID_ARGUMENT"}}, {}, ErrorClass.INVALID_REQUEST, None),
    ("gemini", 400, {"error": {"code": 400, "message": "User location is not supported.",
                               "status": "FAILED_PRECONDITION"}}, {},
     ErrorClass.INVALID_REQUEST, None),
    ("openai_images", 503, oai("server_is_overloaded", "The engine is currently overloaded, "
                               "please try again later.", "service_unavailable_error"), {},
     ErrorClass.OVERLOADED, None),
    ("openai_images", 500, oai("server_error", "An error occurred while processing your "
                               "request.", "server_error"), {}, ErrorClass.SERVER_ERROR, None),
    ("openai_images", 429, oai("rate_limit_exceeded", "Rate limit reached for gpt-image-1.5 on "
                               "images per minute.", "requests"), {"retry-after-ms": "1500"},
     ErrorClass.QUOTA, 1.5),
    ("openai_images", 429, oai("rate_limit_exceeded", "Rate limit reached.", "requests"),
     {"retry-after": "7"}, ErrorClass.QUOTA, 7.0),
    ("openai_images", 429, oai("rate_limit_exceeded", "Rate limit reached.", "requests"),
     {"x-ratelimit-reset-requests": "6m0s"}, ErrorClass.QUOTA, 360.0),
    ("openai_images", 429, oai("rate_limit_exceeded", "Rate limit reached for gpt-image-2 on "
                               "images per minute. Please try again in 6s.", "requests"), {},
     ErrorClass.QUOTA, 6.0),
    ("openai_images", 429, oai("insufficient_quota", "You exceeded your current quota, please "
                               "check your plan and billing details.", "insufficient_quota"), {},
     ErrorClass.AUTH, None),
    ("openai_images", 401, oai("invalid_api_key", "Incorrect API key provided.",
                               "invalid_request_error"), {}, ErrorClass.AUTH, None),
    ("openai_images", 400, oai(None, "Invalid value for 'size'.", "invalid_request_error"), {},
     ErrorClass.INVALID_REQUEST, None),
    ("openai_images", 400, oai("moderation_blocked", "Your request was rejected by the safety "
                               "system.", "image_generation_user_error"), {},
     ErrorClass.CONTENT_POLICY, None),
    ("openai_images", 400, oai("content_policy_violation", "Your request was rejected as a "
                               "result of our safety system.", "invalid_request_error"), {},
     ErrorClass.CONTENT_POLICY, None),
    ("bfl", 503, {"detail": "Service temporarily unavailable"}, {}, ErrorClass.OVERLOADED, None),
    ("bfl", 402, {"detail": "Insufficient credits"}, {}, ErrorClass.AUTH, None),
    ("bfl", 403, {"detail": "Not authenticated"}, {}, ErrorClass.AUTH, None),
    ("bfl", 429, {"detail": "Too many active tasks"}, {"Retry-After": "5"}, ErrorClass.QUOTA, 5.0),
    ("bfl", 400, {"detail": "Bad request"}, {}, ErrorClass.INVALID_REQUEST, None),
    ("seedream", 429, ark("ServerOverloaded", "The service: seedream is currently unable to "
                          "handle additional requests due to server overload.", "TooManyRequests"),
     {}, ErrorClass.OVERLOADED, None),
    ("seedream", 429, ark("RateLimitExceeded.EndpointRPMExceeded", "Too many requests.",
                          "TooManyRequests"), {}, ErrorClass.QUOTA, None),
    ("seedream", 429, ark("QuotaExceeded", "Quota exceeded.", "TooManyRequests"), {},
     ErrorClass.QUOTA, None),
    ("seedream", 400, ark("InputTextSensitiveContentDetected", "The request failed because the "
                          "input text may contain sensitive information.", "BadRequest"), {},
     ErrorClass.CONTENT_POLICY, None),
    ("seedream", 400, ark("OutputImageSensitiveContentDetected.PolicyViolation", "The output "
                          "image may contain sensitive information.", "BadRequest"), {},
     ErrorClass.CONTENT_POLICY, None),
    ("seedream", 403, ark("AccountOverdueError", "Your account has an overdue balance.",
                          "Forbidden"), {}, ErrorClass.AUTH, None),
    ("seedream", 401, ark("AuthenticationError", "The API key is invalid.", "Unauthorized"), {},
     ErrorClass.AUTH, None),
    ("seedream", 404, ark("ModelNotOpen", "Your account has not activated the model.",
                          "NotFound"), {}, ErrorClass.AUTH, None),
    ("seedream", 400, ark("InvalidParameter", "The parameter `size` is invalid.", "BadRequest"),
     {}, ErrorClass.INVALID_REQUEST, None),
    ("seedream", 400, ark("MissingParameter", "The parameter `prompt` is required.",
                          "BadRequest"), {}, ErrorClass.INVALID_REQUEST, None),
    ("seedream", 500, ark("InternalServiceError", "The service encountered an unexpected "
                          "internal error.", "InternalServerError"), {},
     ErrorClass.SERVER_ERROR, None),
    ("recraft", 503, {"detail": "Service is busy, try later"}, {}, ErrorClass.OVERLOADED, None),
    ("recraft", 500, {"message": "Internal error"}, {}, ErrorClass.SERVER_ERROR, None),
    ("recraft", 429, {"code": "too_many_requests", "message": "Slow down"},
     {"Retry-After": "3"}, ErrorClass.QUOTA, 3.0),
    ("recraft", 401, {"error": "unauthorized"}, {}, ErrorClass.AUTH, None),
    ("recraft", 402, {"code": "not_enough_credits", "message": "Not enough credits"}, {},
     ErrorClass.AUTH, None),
    ("recraft", 400, {"code": "invalid_size", "message": "Size 999x999 is not supported"}, {},
     ErrorClass.INVALID_REQUEST, None),
    ("recraft", 400, {"message": "Prompt contains inappropriate content"}, {},
     ErrorClass.CONTENT_POLICY, None),
    ("openai_compatible", 500, wrapped(GEMINI_503), {}, ErrorClass.OVERLOADED, None),
    ("openai_compatible", 500, wrapped(GEMINI_429), {}, ErrorClass.QUOTA, 26.0),
    ("openai_compatible", 500, wrapped({"error": {"code": 400, "message": "Invalid argument.",
                                                  "status": "INVALID_ARGUMENT"}}), {},
     ErrorClass.INVALID_REQUEST, None),
    ("openai_compatible", 403, {"error": {"code": "insufficient_user_quota", "message": "User "
                                          "quota is not enough (request id: 2026abc)",
                                          "type": "new_api_error"}}, {}, ErrorClass.AUTH, None),
    ("openai_compatible", 502, {"error": {"code": "bad_response_status_code", "message":
                                          "upstream error", "type": "new_api_error"}}, {},
     ErrorClass.SERVER_ERROR, None),
    ("openai_compatible", 400, oai("moderation_blocked", "Rejected by the safety system.",
                                   "image_generation_user_error"), {},
     ErrorClass.CONTENT_POLICY, None),
]


@pytest.mark.parametrize(
    ("wire_format", "status", "body", "headers", "expected", "retry_after_s"),
    ERROR_ANSWERS,
    ids=[f"{case[0]}-{case[1]}-{case[4].value}-{i}" for i, case in enumerate(ERROR_ANSWERS)],
)
def test_vendor_error_answer_is_classified_with_its_retry_hint(
    wire_format: str, status: int, body: dict[str, Any], headers: dict[str, str],
    expected: ErrorClass, retry_after_s: float | None,
) -> None:
    vendor = FakeVendor.answering(wire_format, status, body, headers)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a red fox in snow"))

    assert caught.value.error_class is expected
    assert caught.value.vendor_status == status
    assert caught.value.retry_after_s == pytest.approx(retry_after_s)
    assert len(vendor.posted()) == 1, "an error answer is never resubmitted"


def test_aggregator_request_id_is_read_from_the_error_message() -> None:
    body = {"error": {"code": "model_not_found", "message": "No available channel for model x "
                      "(request id: 20260101abc)", "type": "new_api_error"}}
    vendor = FakeVendor.answering("openai_compatible", 503, body)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("openai_compatible"), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.OVERLOADED
    assert caught.value.request_id == "20260101abc"


def test_bfl_validation_error_message_names_the_fields() -> None:
    body = {"detail": [{"loc": ["body", "width"], "msg": "Input should be a multiple of 16",
                        "type": "value_error"}]}
    vendor = FakeVendor.answering("bfl", 422, body)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("bfl"), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert "width: Input should be a multiple of 16" in caught.value.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "responseId": "r1"},
         ErrorClass.CONTENT_POLICY),
        ({"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}], "responseId": "r1"},
         ErrorClass.CONTENT_POLICY),
        ({"candidates": [{"finishReason": "PROHIBITED_CONTENT", "index": 0}], "responseId": "r1"},
         ErrorClass.CONTENT_POLICY),
        ({"candidates": [{"finishReason": "NO_IMAGE", "index": 0}], "responseId": "r1"},
         ErrorClass.SERVER_ERROR),
        ({"candidates": [{"finishReason": "IMAGE_OTHER", "index": 0}], "responseId": "r1"},
         ErrorClass.SERVER_ERROR),
        ({"candidates": [{"content": {"role": "model", "parts": [{"text": "I cannot draw"}]},
                          "finishReason": "STOP"}], "responseId": "r1"},
         ErrorClass.SERVER_ERROR),
    ],
    ids=["prompt-blocked", "image-safety", "prohibited", "no-image", "image-other", "text-only"],
)
def test_gemini_200_without_an_image_is_policy_or_model_failure(
    body: dict[str, Any], expected: ErrorClass
) -> None:
    vendor = FakeVendor.answering("gemini", 200, body)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("gemini"), GenerationRequest("a fox"))

    assert caught.value.error_class is expected
    assert caught.value.request_id == "r1"
    if expected is ErrorClass.SERVER_ERROR:
        assert "no image" in caught.value.message
