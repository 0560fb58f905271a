"""The notice: one sentence for end users, derived from a job's attempts (``scheduler/notices.py``).

Pure functions; the words for every error class and every reason a model is skipped, the models
named as end users know them, and the cases that have no notice at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from breaker import Decision, Reason
from providers.catalogue import CatalogueError, load_catalogue, parse_catalogue
from providers.errors import ErrorClass
from providers.types import GenerationRequest
from scheduler.notices import Tried, batch_notice, job_notice, reason_of
from workers.admission import denial_message

CATALOGUE = load_catalogue()
NAME = CATALOGUE.shown_name
GEMINI, FLASH, SEEDREAM = "gemini-3-pro-image-preview", "gemini-2.5-flash-image", "seedream-4.5"


def succeeded(*attempts: Tried, served_by: str = SEEDREAM, requested: str | None = GEMINI) -> str | None:
    return job_notice(status="succeeded", served_by=served_by, requested_model=requested,
                      error_type=None, attempts=attempts, name=NAME)


def test_every_shipped_model_has_a_name_for_end_users_and_an_unknown_one_shows_its_id() -> None:
    assert all(m.display_name for m in CATALOGUE.models.values())
    assert (NAME(GEMINI), NAME(SEEDREAM), NAME("gpt-image-1.5")) == (
        "Gemini 3 Pro Image", "Seedream 4.5", "GPT Image 1.5")
    assert NAME("retired-model-7") == "retired-model-7"


def test_a_blank_display_name_is_refused_naming_the_model_and_field() -> None:
    text = ('[[models]]\nid = "m1"\ndisplay_name = "  "\nvendor = "openai"\n'
            'wire_format = "openai_images"\nvendor_model = "x"\nbase_url = "https://x.test"\n'
            'api_key_env = "K"\nprice_per_image_usd = 0.01\n[routes.default]\nmodels = ["m1"]\n')
    with pytest.raises(CatalogueError) as refused:
        parse_catalogue(text, Path("mine.toml"))
    assert str(refused.value) == "mine.toml: model 'm1': display_name: must not be empty (got '  ')"


def test_a_job_served_by_the_model_it_asked_for_has_no_notice() -> None:
    assert succeeded(Tried(GEMINI, "success"), served_by=GEMINI) is None
    # Even after a first walk failed: it was served as asked in the end.
    assert succeeded(Tried(GEMINI, "overloaded"), Tried(GEMINI, "success"), served_by=GEMINI) is None


def test_a_fallback_names_the_model_that_made_it_and_why_the_first_did_not() -> None:
    assert succeeded(Tried(GEMINI, "overloaded", "503 high demand"), Tried(SEEDREAM, "success")) == (
        "Made with Seedream 4.5 because Gemini 3 Pro Image is overloaded right now.")


@pytest.mark.parametrize(("outcome", "words"), [
    (ErrorClass.OVERLOADED, "is overloaded right now"),
    (ErrorClass.SERVER_ERROR, "is having problems right now"),
    (ErrorClass.TIMEOUT, "is answering too slowly right now"),
    (ErrorClass.QUOTA, "is rate-limited right now"),
    (ErrorClass.AUTH, "is not set up correctly"),
    ("lost", "did not finish"),
    ("some_future_outcome", "is unavailable right now"),
])
def test_each_error_class_in_words(outcome: str, words: str) -> None:
    assert succeeded(Tried(GEMINI, outcome), Tried(SEEDREAM, "success")) == (
        f"Made with Seedream 4.5 because Gemini 3 Pro Image {words}.")


@pytest.mark.parametrize(("decision", "words"), [
    (Decision(False, reason=Reason.OPEN, retry_at_ms=1_800_000_000_000), "is unavailable right now"),
    (Decision(False, reason=Reason.FORCED_OPEN), "is switched off right now"),
    (Decision(False, reason=Reason.HALF_OPEN_BUDGET_SPENT, retry_at_ms=1_800_000_000_000),
     "is recovering from an outage right now"),
    (Decision(False, reason=Reason.QUOTA_COOLDOWN, retry_at_ms=1_800_000_000_000),
     "is rate-limited right now"),
    (Decision(False, reason=Reason.MISCONFIGURED), "is not set up correctly"),
])
def test_a_model_the_breaker_skipped_in_words(decision: Decision, words: str) -> None:
    """The attempt's message is the worker's denial message (``workers/admission.py``)."""
    skipped = Tried(GEMINI, "skipped", denial_message(decision, "invalid API key"))
    assert succeeded(skipped, Tried(SEEDREAM, "success")) == (
        f"Made with Seedream 4.5 because Gemini 3 Pro Image {words}.")


@pytest.mark.parametrize("message", ["concurrency cap reached (8 calls in flight)",
                                     "rate limit reached (20 requests per minute)"])
def test_a_model_at_its_vendor_limit_is_at_capacity(message: str) -> None:
    assert succeeded(Tried(GEMINI, "skipped", message), Tried(SEEDREAM, "success")) == (
        "Made with Seedream 4.5 because Gemini 3 Pro Image is at capacity right now.")


@pytest.mark.parametrize("request_", [
    GenerationRequest(prompt="x", width=6000, height=6000),
    GenerationRequest(prompt="x", n=3),
    GenerationRequest(prompt="x", vector=True),
])
def test_a_model_that_cannot_serve_the_request_says_so_without_right_now(
        request_: GenerationRequest) -> None:
    unfit = CATALOGUE.model(GEMINI).can_serve(request_)
    assert unfit is not None
    assert reason_of(Tried(GEMINI, "skipped", unfit)) is not None
    assert succeeded(Tried(GEMINI, "skipped", unfit), Tried(SEEDREAM, "success")) == (
        "Made with Seedream 4.5 because Gemini 3 Pro Image cannot make this kind of image.")


def test_several_models_are_named_together_when_their_reason_is_the_same() -> None:
    assert succeeded(Tried(GEMINI, "overloaded"), Tried(FLASH, "overloaded"),
                     Tried(SEEDREAM, "success")) == (
        "Made with Seedream 4.5 because Gemini 3 Pro Image and Gemini 2.5 Flash Image are "
        "overloaded right now.")
    assert succeeded(Tried(GEMINI, "overloaded"), Tried(FLASH, "quota"),
                     Tried(SEEDREAM, "success")) == (
        "Made with Seedream 4.5 because Gemini 3 Pro Image is overloaded and Gemini 2.5 Flash "
        "Image is rate-limited right now.")


def test_lasting_reasons_come_first_so_that_right_now_closes_the_passing_ones() -> None:
    unfit = "gemini-3-pro-image-preview does not offer 6000x6000 (from 64x64 to 5504x5504)"
    assert succeeded(Tried(GEMINI, "skipped", unfit), Tried(FLASH, "timeout"),
                     Tried(SEEDREAM, "success")) == (
        "Made with Seedream 4.5 because Gemini 3 Pro Image cannot make this kind of image and "
        "Gemini 2.5 Flash Image is answering too slowly right now.")


def test_a_vendors_own_answer_tells_more_than_a_later_breaker_skip() -> None:
    """First walk: Gemini answered 503 (the job was parked). Second walk: its breaker was open."""
    assert succeeded(Tried(GEMINI, "overloaded"), Tried(FLASH, "overloaded"),
                     Tried(GEMINI, "skipped", "breaker open until 10:00:00 UTC"),
                     Tried(FLASH, "success"), served_by=FLASH) == (
        "Made with Gemini 2.5 Flash Image because Gemini 3 Pro Image is overloaded right now.")


def test_a_fallback_without_attempts_on_record_still_says_what_it_was_instead_of() -> None:
    assert succeeded() == "Made with Seedream 4.5 instead of Gemini 3 Pro Image."
    assert succeeded(requested=None) is None


def failed(error_type: str, *attempts: Tried) -> str | None:
    return job_notice(status="failed", served_by=None, requested_model=GEMINI,
                      error_type=error_type, attempts=attempts, name=NAME)


def test_a_job_no_model_served_in_time_says_so_and_when_to_try_again() -> None:
    assert failed("all_models_unavailable", Tried(GEMINI, "overloaded"),
                  Tried(FLASH, "skipped", "breaker open until 10:00:00 UTC"),
                  Tried(SEEDREAM, "quota")) == "Every model was busy; try again in a few minutes."
    # A job pinned to one model names it.
    assert failed("all_models_unavailable",
                  Tried(GEMINI, "skipped", "breaker forced open by an operator")) == (
        "Gemini 3 Pro Image is switched off right now; try again in a few minutes.")
    assert failed("all_models_unavailable") == "Every model was busy; try again in a few minutes."


@pytest.mark.parametrize("error_type", ["invalid_request", "content_policy"])
def test_a_job_refused_for_its_request_has_no_notice_its_error_says_why(error_type: str) -> None:
    assert failed(error_type, Tried(GEMINI, error_type, "the prompt was refused")) is None


def test_a_parked_job_says_it_waits_for_a_model() -> None:
    def queued(*attempts: Tried) -> str | None:
        return job_notice(status="queued", served_by=None, requested_model=GEMINI,
                          error_type=None, attempts=attempts, name=NAME)

    assert queued() is None  # simply waiting its turn
    assert queued(Tried(GEMINI, "lost", "the worker stopped")) is None  # given back, not parked
    assert queued(Tried(GEMINI, "skipped", "breaker open until 10:00:00 UTC")) == (
        "Gemini 3 Pro Image is unavailable right now; your image will be made as soon as it is "
        "back.")
    assert queued(Tried(GEMINI, "overloaded"), Tried(FLASH, "overloaded")) == (
        "Every model is busy right now; your image will be made as soon as one is free.")


@pytest.mark.parametrize("status", ["running", "canceled"])
def test_a_running_or_canceled_job_has_no_notice(status: str) -> None:
    assert job_notice(status=status, served_by=None, requested_model=GEMINI, error_type=None,
                      attempts=[Tried(GEMINI, "overloaded")], name=NAME) is None


def test_a_batch_notice_counts_fallbacks_and_jobs_no_model_made() -> None:
    assert batch_notice(total=200, degraded=0, unavailable=0) is None
    assert batch_notice(total=1000, degraded=312, unavailable=0) == (
        "312 of 1,000 images were made with a fallback model; each result's notice says why.")
    assert batch_notice(total=5, degraded=1, unavailable=0) == (
        "1 of 5 images was made with a fallback model; each result's notice says why.")
    assert batch_notice(total=5, degraded=2, unavailable=1) == (
        "2 of 5 images were made with a fallback model and 1 could not be made because every "
        "model was busy; each result's notice says why.")
    assert batch_notice(total=1, degraded=0, unavailable=1) == (
        "1 of 1 image could not be made because every model was busy; try it again in a few "
        "minutes.")
