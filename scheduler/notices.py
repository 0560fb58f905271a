"""The notice: one plain sentence an end user can read about a job that was not served as asked.

    "Made with Seedream 4.5 because Gemini 3 Pro Image is overloaded right now."

It is derived here and only here, from what the job records: its status, the model asked for and
the one that served it, its error type, and its attempts (each model tried, its outcome — an
error class of ``providers/errors.py``, ``success``, ``skipped`` or ``lost`` — and the attempt's
message, which says why a model was skipped). The API's job, its event stream, the batch result
lines and the webhooks all read it from ``job_notice``; a batch's summary is ``batch_notice``.

A job served by the model it asked for, one still running, one canceled, and one that failed
because of the request itself (invalid request, content policy: its error says why) have none.
Model names are the catalogue's ``display_name``, never ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from providers.errors import ErrorClass
from storage.models import AttemptOutcome, Job, JobStatus

ALL_MODELS_UNAVAILABLE = "all_models_unavailable"  # the error of a job no model served in time
SUCCESS = "success"


@dataclass(frozen=True)
class Tried:
    """One attempt as the notice reads it (an ``Attempt`` row has these three fields)."""

    model: str
    outcome: str
    message: str | None = None


@dataclass(frozen=True)
class Reason:
    """Why a model did not serve, in an end user's words: the predicate after its name."""

    singular: str  # "is overloaded"
    plural: str  # "are overloaded"
    transient: bool  # "right now" applies: the model may serve again soon
    weight: int = 1  # which of a model's attempts tells its story best: the heaviest, then the last


OVERLOADED = Reason("is overloaded", "are overloaded", True, 3)
FAILING = Reason("is having problems", "are having problems", True, 3)
TOO_SLOW = Reason("is answering too slowly", "are answering too slowly", True, 3)
RATE_LIMITED = Reason("is rate-limited", "are rate-limited", True, 3)
NOT_SET_UP = Reason("is not set up correctly", "are not set up correctly", False, 3)
REFUSED = Reason("could not take this request", "could not take this request", False, 3)
CUT_OFF = Reason("did not finish", "did not finish", False, 2)
UNAVAILABLE = Reason("is unavailable", "are unavailable", True)
SWITCHED_OFF = Reason("is switched off", "are switched off", True)
RECOVERING = Reason("is recovering from an outage", "are recovering from an outage", True)
AT_CAPACITY = Reason("is at capacity", "are at capacity", True)
UNFIT = Reason("cannot make this kind of image", "cannot make this kind of image", False)

ERROR_REASONS: dict[str, Reason] = {
    ErrorClass.OVERLOADED: OVERLOADED,
    ErrorClass.SERVER_ERROR: FAILING,
    ErrorClass.TIMEOUT: TOO_SLOW,
    ErrorClass.QUOTA: RATE_LIMITED,
    ErrorClass.AUTH: NOT_SET_UP,
    ErrorClass.INVALID_REQUEST: REFUSED,
    ErrorClass.CONTENT_POLICY: REFUSED,
    AttemptOutcome.LOST: CUT_OFF,
}

# A skipped attempt's message says why (workers/admission.py's denials, the vendor limits, or
# the catalogue's ``ModelSpec.can_serve``); the first prefix that matches wins.
SKIP_REASONS: tuple[tuple[str, Reason], ...] = (
    ("breaker forced open", SWITCHED_OFF),
    ("breaker half-open", RECOVERING),
    ("breaker open", UNAVAILABLE),
    ("quota cooldown", RATE_LIMITED),
    ("misconfigured", NOT_SET_UP),
    ("concurrency cap reached", AT_CAPACITY),
    ("rate limit reached", AT_CAPACITY),
    ("breaker", UNAVAILABLE),
)
UNFIT_MARKS = (" does not offer ", " does not produce ", " produces only ", " returns at most ")


def reason_of(attempt: Tried) -> Reason | None:
    """Why this attempt did not serve; None for a success or a call still in progress."""
    if attempt.outcome in (SUCCESS, AttemptOutcome.IN_PROGRESS):
        return None
    if attempt.outcome in ERROR_REASONS:
        return ERROR_REASONS[attempt.outcome]
    if attempt.outcome == AttemptOutcome.SKIPPED:
        message = (attempt.message or "").strip()
        for prefix, reason in SKIP_REASONS:
            if message.startswith(prefix):
                return reason
        if any(mark in f" {message} " for mark in UNFIT_MARKS):
            return UNFIT
    return UNAVAILABLE


def job_notice(*, status: str, served_by: str | None, requested_model: str | None,
               error_type: str | None, attempts: Sequence[Tried],
               name: Callable[[str], str] = str) -> str | None:
    """The notice of a job, or None when nothing was degraded. ``name`` turns a model id into
    the name an end user reads (``Catalogue.shown_name``)."""
    if status == JobStatus.SUCCEEDED:
        if served_by is None or requested_model is None or served_by == requested_model:
            return None
        because = _because(_reasons(attempts, skip=served_by), name)
        if because is None:
            return f"Made with {name(served_by)} instead of {name(requested_model)}."
        return f"Made with {name(served_by)} because {because}."
    if status == JobStatus.FAILED and error_type == ALL_MODELS_UNAVAILABLE:
        return _unavailable(_reasons(attempts), name, "try again in a few minutes.",
                            "Every model was busy; try again in a few minutes.")
    if status == JobStatus.QUEUED:  # parked: every model of its route was denied or failing
        reasons = _reasons(attempts)
        if not any(r is not CUT_OFF for r in reasons.values()):
            return None  # never tried, or given back after a worker stopped: it simply waits
        return _unavailable(reasons, name, "your image will be made as soon as it is back.",
                            "Every model is busy right now; your image will be made as soon "
                            "as one is free.")
    return None


def notice_of(job: Job, name: Callable[[str], str] = str) -> str | None:
    """``job_notice`` of a job row; reads ``job.attempts`` (load them while its session is open)."""
    return job_notice(status=job.status, served_by=job.served_by,
                      requested_model=job.requested_model, error_type=job.error_type,
                      attempts=[Tried(a.model, a.outcome, a.message) for a in job.attempts],
                      name=name)


def batch_notice(*, total: int, degraded: int, unavailable: int) -> str | None:
    """A batch's summary: how many of its images a fallback model made, and how many no model
    could make in time; None when neither happened. Each result line's notice says why."""
    if not degraded and not unavailable:
        return None
    of = f"of {total:,} image{'s' if total != 1 else ''}"
    if degraded and unavailable:
        return (f"{degraded:,} {of} were made with a fallback model and {unavailable:,} could "
                f"not be made because every model was busy; each result's notice says why.")
    if degraded:
        verb = "was" if degraded == 1 else "were"
        return f"{degraded:,} {of} {verb} made with a fallback model; each result's notice says why."
    verb = "was" if unavailable == 1 else "were"
    return (f"{unavailable:,} {of} could not be made because every model {verb} busy; "
            f"try {'it' if unavailable == 1 else 'them'} again in a few minutes.")


def _reasons(attempts: Sequence[Tried], skip: str | None = None) -> dict[str, Reason]:
    """Each model tried (but ``skip``), in the order first tried, with the reason that tells
    best why it did not serve: the heaviest (a vendor's own answer over a skip), then the last."""
    found: dict[str, Reason] = {}
    for attempt in attempts:
        reason = reason_of(attempt)
        if attempt.model == skip or reason is None:
            continue
        known = found.get(attempt.model)
        if known is None or reason.weight >= known.weight:
            found[attempt.model] = reason
    return found


def _because(reasons: dict[str, Reason], name: Callable[[str], str]) -> str | None:
    """``A is overloaded and B is rate-limited right now``: models with the same reason named
    together, lasting reasons first, "right now" once at the end if any reason is passing."""
    if not reasons:
        return None
    groups: dict[Reason, list[str]] = {}
    for model, reason in reasons.items():
        groups.setdefault(reason, []).append(name(model))
    ordered = sorted(groups.items(), key=lambda item: item[0].transient)  # stable: route order
    clauses = [f"{_and(names)} {reason.singular if len(names) == 1 else reason.plural}"
               for reason, names in ordered]
    return _and(clauses) + (" right now" if any(r.transient for r in groups) else "")


def _unavailable(reasons: dict[str, Reason], name: Callable[[str], str], one_model_tail: str,
                 several: str) -> str:
    """One model tried: its name and reason, then ``one_model_tail``; else ``several``."""
    if len(reasons) != 1:
        return several
    text = f"{_because(reasons, name)}; {one_model_tail}"
    return text[:1].upper() + text[1:]


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
