"""Ids that come from outside (a path, a query) are checked here before they reach SQL.

Every id we issue is ``<prefix>_<32 hex digits>`` and fits the id columns (``String(40)``). A value
that could never be one (longer than the columns, a NUL character PostgreSQL refuses, a lone
surrogate no database can encode) is answered like any unknown id, without a query.
"""

from __future__ import annotations

from scheduler.job_spec import shown, text_problem

ID_MAX_CHARS = 40  # the id columns of storage/models.py


def possible_id(value: str) -> bool:
    return 0 < len(value) <= ID_MAX_CHARS and text_problem(value) is None


def id_problem(value: str) -> str | None:
    """Why ``value`` can never be an id, or None."""
    if not value:
        return "must not be empty"
    if len(value) > ID_MAX_CHARS:
        return f"is longer than any id ({ID_MAX_CHARS} characters)"
    return text_problem(value)


def shown_id(value: str) -> str:
    """An id as a message may echo it (escaped and cut if it could never be one)."""
    return value if possible_id(value) and value.isprintable() else shown(value, ID_MAX_CHARS)
