"""The outcomes a simulated vendor call can have, and the ``[sim:KIND]`` prompt marker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    OK = "ok"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    DEADLINE = "deadline"
    HANG = "hang"
    QUOTA = "quota"
    AUTH = "auth"
    BILLING = "billing"
    INVALID_REQUEST = "invalid_request"
    CONTENT_POLICY = "content_policy"
    PROMPT_BLOCKED = "prompt_blocked"
    NO_IMAGE = "no_image"
    GARBAGE_HTML = "garbage_html"
    TRUNCATED_JSON = "truncated_json"
    BAD_BASE64 = "bad_base64"
    PARTIAL = "partial"


# Real vendors reject these before doing any work, so they answer after a fraction of the latency.
FAST_KINDS = frozenset(
    {
        Kind.OVERLOADED,
        Kind.QUOTA,
        Kind.AUTH,
        Kind.BILLING,
        Kind.INVALID_REQUEST,
        Kind.PROMPT_BLOCKED,
        Kind.GARBAGE_HTML,
    }
)
FAST_ERROR_FRACTION = 0.05
HANG_S = 600.0

# `[sim:KIND]` or `[sim:KIND:DETAIL]`; DETAIL picks a vendor-specific variant (e.g. a finishReason).
_MARKER = re.compile(r"\[sim:([a-z0-9_]+)(?::([A-Za-z0-9_]+))?\]")


@dataclass(frozen=True)
class Forced:
    kind: Kind
    detail: str | None = None


def forced_outcome(prompt: str) -> Forced | None:
    """The first valid ``[sim:KIND]`` marker in the prompt; unknown kinds are plain text."""
    for match in _MARKER.finditer(prompt):
        try:
            kind = Kind(match.group(1))
        except ValueError:
            continue
        return Forced(kind, match.group(2))
    return None
