"""Cluster-wide vendor limits per model: a concurrency cap and a requests-per-minute window.

Both live in Redis and fail open, like the breaker; they sit beside it, not inside it, because a
limit is a contract with the vendor while the breaker is a judgement about its health."""

from throttle.limits import VendorLimits

__all__ = ["VendorLimits"]
