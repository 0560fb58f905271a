"""Reading batch lines: every bad line is named by its number and reason; good lines parse whole."""

from __future__ import annotations

import io
import json

import pytest

from scheduler.batches.jsonl import BatchLimits, JobLine, TooManyLines, numbered_lines, parse_line

LIMITS = BatchLimits(max_lines=5, max_prompt_chars=50, max_images_per_job=4)


def errors_of(raw: bytes) -> list[tuple[str | None, str]]:
    parsed = parse_line(7, raw, LIMITS)
    assert isinstance(parsed, list), parsed
    assert all(e.line == 7 for e in parsed)
    return [(e.field, e.message) for e in parsed]


def test_a_full_line_parses_into_every_field() -> None:
    raw = json.dumps({"custom_id": "fox-1", "prompt": "a fox", "size": "512x768", "n": 2,
                      "quality": "high", "route": "fast", "metadata": {"sku": 9}}).encode()
    parsed = parse_line(3, raw + b"\n", LIMITS)
    assert parsed == JobLine(line=3, custom_id="fox-1", prompt="a fox", width=512, height=768,
                             n=2, quality="high", route="fast", metadata={"sku": 9})


def test_the_openai_batch_envelope_is_read_from_its_body() -> None:
    raw = json.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/images/generations",
                      "body": {"prompt": "a lighthouse", "model": "gpt-image-1.5"}}).encode()
    parsed = parse_line(1, raw, LIMITS)
    assert isinstance(parsed, JobLine)
    assert (parsed.custom_id, parsed.prompt, parsed.model) == ("r1", "a lighthouse",
                                                               "gpt-image-1.5")


@pytest.mark.parametrize(("raw", "field", "reason"), [
    (b'{"custom_id": "a", "prompt": "x"', None, "not valid JSON"),
    (b'["a", "x"]', None, "must be a JSON object, got list"),
    (b'"just a string"', None, "must be a JSON object, got str"),
    (b'{"custom_id": "a"}', "prompt", "prompt is required"),
    (b'{"custom_id": "a", "prompt": "   "}', "prompt", "must not be empty"),
    (b'{"prompt": "x"}', "custom_id", "custom_id is required"),
    (b'{"custom_id": "a", "prompt": "' + b"y" * 51 + b'"}', "prompt", "the limit is 50"),
    (b'{"custom_id": "a", "prompt": "x", "size": "huge"}', "size", "1024x1024"),
    (b'{"custom_id": "a", "prompt": "x", "n": 9}', "n", "between 1 and 4"),
    (b'{"custom_id": "a", "prompt": "x", "n": true}', "n", "between 1 and 4"),
    (b'{"custom_id": "a", "prompt": "x", "colour": "red"}', "colour", "unknown field"),
    (b'{"custom_id": "a", "prompt": "x", "model": "m", "route": "r"}', "model", "not both"),
    (b'{"custom_id": "a", "prompt": "caf\xe9"}', None, "not valid UTF-8: byte 0xe9"),
])
def test_a_bad_line_is_reported_with_its_number_field_and_reason(
        raw: bytes, field: str | None, reason: str) -> None:
    reported = errors_of(raw)
    assert any(f == field and reason in message for f, message in reported), reported


def test_every_problem_of_one_line_is_reported_not_just_the_first() -> None:
    fields = {f for f, _ in errors_of(b'{"custom_id": 5, "size": "1x1", "n": 0}')}
    assert fields == {"custom_id", "prompt", "size", "n"}


def test_line_numbers_count_blank_lines_and_a_byte_order_mark_is_ignored() -> None:
    data = b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": 2}\n'
    assert list(numbered_lines(io.BytesIO(data), 10)) == [(1, b'{"a": 1}\n'), (4, b'{"b": 2}\n')]


def test_more_lines_than_the_limit_names_the_first_line_over_it() -> None:
    data = b"".join(b'{"n": %d}\n' % k for k in range(LIMITS.max_lines + 3))
    with pytest.raises(TooManyLines) as raised:
        list(numbered_lines(io.BytesIO(data), LIMITS.max_lines))
    assert raised.value.line == LIMITS.max_lines + 1
    assert f"more than {LIMITS.max_lines} lines" in str(raised.value)


@pytest.mark.parametrize(("raw", "field", "reason"), [
    (b'{"custom_id": "a", "prompt": "x\\u0000"}', "prompt", "NUL"),
    (b'{"custom_id": "a", "prompt": "x\\ud800"}', "prompt", "lone surrogate"),
    (b'{"custom_id": "a\\u0000", "prompt": "x"}', "custom_id", "NUL"),
    (b'{"custom_id": "a", "prompt": "x", "metadata": {"k": ["\\udc00"]}}', "metadata.k.0",
     "lone surrogate"),
    (b"[" * 5000 + b"]" * 5000, None, "nests too deeply"),
    (b'{"custom_id": "a", "prompt": "x", "metadata": ' + b'{"a":' * 600 + b"1" + b"}" * 601,
     "metadata.a.a.a.a.a.a.a.a", "deeper than 8 levels"),
    (b'{"custom_id": "a", "prompt": "x", "n": "2"}', "n", "between 1 and 4"),
    (b'{"custom_id": "a", "prompt": "x", "size": "1024x1024\\n"}', "size", "1024x1024"),
    (b'{"custom_id": "a", "prompt": "x", "custom_id": "b"}', "custom_id", "more than once"),
    (b'{"custom_id": "a", "prompt": "x", "metadata": {"v": Infinity}}', None, "Infinity"),
    (b'{"custom_id": "a", "prompt": "x", "metadata": {"v": ' + b"1" * 5000 + b"}}", None,
     "cannot be read"),
    (b'{"custom_id": "a", "body": {"prompt": "x", "n": true}}', "body.n", "between 1 and 4"),
])
def test_a_hostile_line_is_that_lines_error_never_an_exception(
        raw: bytes, field: str | None, reason: str) -> None:
    reported = errors_of(raw)
    assert any(f == field and reason in message for f, message in reported), reported


def test_a_line_and_a_single_job_are_judged_by_the_same_definition() -> None:
    """POST /v1/jobs and a batch line share scheduler/job_spec.py: same fields, same verdicts."""
    from scheduler.job_spec import InvalidFields, JobLimits, validate_job

    for fields in ({"prompt": "x", "n": "2"}, {"prompt": "x\x00"}, {"prompt": "x", "size": "9x9"},
                   {"prompt": "x", "metadata": {"a": {"b": "\ud800"}}},
                   {"prompt": "x", "quality": "ultra"}, {"prompt": "x", "model": "m",
                                                        "route": "r"}):
        with pytest.raises(InvalidFields) as single:
            validate_job(fields, JobLimits(max_prompt_chars=50, max_images_per_job=4))
        line = errors_of(json.dumps({"custom_id": "c", **fields}).encode())
        assert [(f, m) for f, m in single.value.problems] == line, fields
