"""Reading batch lines: every bad line is named by its number and reason; good lines parse whole."""

from __future__ import annotations

import io
import json

import pytest

from scheduler.jsonl import BatchLimits, JobLine, TooManyLines, numbered_lines, parse_line

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
