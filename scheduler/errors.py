"""Domain errors of the queue; the API turns them into HTTP status codes in one place."""

from __future__ import annotations


class QueueError(Exception):
    pass


class NotFound(QueueError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident} not found")
        self.what = what
        self.ident = ident


class Conflict(QueueError):
    """The request cannot be applied to the object's current state."""


class InvalidJob(QueueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
