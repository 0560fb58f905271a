"""Reading a vendor's "come back in N seconds" hint and its request id, wherever it put them.

Retry hints, in the order trusted: ``retry-after-ms``; ``retry-after`` (seconds or an HTTP
date); Google ``RetryInfo.retryDelay`` ("26s"); a ``retry_after`` number in the body; the
message text ("Please retry in 25.46s", "Please try again in 6s"); and last OpenAI's
``x-ratelimit-reset-requests`` ("1s", "6m0s", "20ms").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_MESSAGE_DELAY = re.compile(r"(?:retry|try again) in (\d+(?:\.\d+)?)\s*(ms|s|seconds?)\b",
                            re.IGNORECASE)
_MESSAGE_REQUEST_ID = re.compile(r"request[ _-]?id:?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)
_REQUEST_ID_HEADERS = ("x-request-id", "x-trace-id", "cf-ray")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str) -> float | None:
    """Go-style durations as vendors send them: "26s", "6m0s", "20ms", "1.5s", "1h2m"."""
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def parse_retry_after_s(value: str, now: datetime | None = None) -> float | None:
    """``Retry-After``: delta seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after_from(headers: httpx.Headers, body: Any, message: str) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    if "retry-after" in headers:
        seconds = parse_retry_after_s(headers["retry-after"])
        if seconds is not None:
            return seconds
    seconds = _retry_info_s(body)
    if seconds is not None:
        return seconds
    match = _MESSAGE_DELAY.search(message)
    if match:
        return float(match.group(1)) * (0.001 if match.group(2).lower() == "ms" else 1.0)
    if "x-ratelimit-reset-requests" in headers:
        return parse_duration_s(headers["x-ratelimit-reset-requests"])
    return None


def request_id_from(headers: httpx.Headers, message: str = "") -> str | None:
    for name in _REQUEST_ID_HEADERS:
        if headers.get(name):
            return headers[name]
    match = _MESSAGE_REQUEST_ID.search(message)
    return match.group(1).rstrip(".") if match else None


def _retry_info_s(body: Any) -> float | None:
    if not isinstance(body, dict):
        return None
    retry_after = body.get("retry_after")
    if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
        return float(retry_after)
    error = body.get("error")
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            return parse_duration_s(detail["retryDelay"])
    return None
