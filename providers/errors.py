"""The one error taxonomy every adapter translates vendor answers into.

    ProviderError
     ├── overloaded       503, UNAVAILABLE, "high demand"       -> next model, breaker failure
     ├── server_error     5xx, connection errors, 200 w/o image -> next model, breaker failure
     ├── timeout          our client timeout                    -> next model, breaker failure
     ├── quota            429, RESOURCE_EXHAUSTED               -> next model, cooldown only
     ├── auth             401, 403, 402 billing                 -> next model, misconfigured
     ├── invalid_request  400, INVALID_ARGUMENT                 -> job fails, breaker ignores
     └── content_policy   moderation / SAFETY                   -> job fails, breaker ignores

Nothing above ``providers/`` ever sees an ``httpx`` exception: adapters translate at the edge.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    QUOTA = "quota"
    AUTH = "auth"
    INVALID_REQUEST = "invalid_request"
    CONTENT_POLICY = "content_policy"

    @property
    def is_job_level(self) -> bool:
        """The job itself is at fault: trying another model would not help."""
        return self in (ErrorClass.INVALID_REQUEST, ErrorClass.CONTENT_POLICY)


class ProviderError(Exception):
    """A vendor call that did not produce an image, already classified."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        vendor_status: int | None = None,
        vendor_code: str | None = None,
        retry_after_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.vendor_status = vendor_status
        self.vendor_code = vendor_code
        self.retry_after_s = retry_after_s
        self.request_id = request_id

    def __reduce__(self) -> tuple[object, ...]:
        """Picklable with every field (Celery result backends and process pools pickle errors)."""
        return (_rebuild, (self.error_class, self.message, self.__dict__.copy()))

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.error_class.value!r}, {self.message!r}, "
            f"vendor_status={self.vendor_status!r}, vendor_code={self.vendor_code!r})"
        )


def _rebuild(error_class: ErrorClass, message: str, fields: dict[str, object]) -> ProviderError:
    error = ProviderError(error_class, message)
    error.__dict__.update(fields)
    return error
