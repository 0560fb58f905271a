"""docs/configuration.md is generated from the settings object and must match it."""

from __future__ import annotations

import subprocess
import sys

from imagequeue.configdoc import DOC_PATH, render
from imagequeue.settings import Settings
from tests.conftest import REPO_ROOT


def test_every_setting_explains_itself() -> None:
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    assert missing == [], f"settings without a description: {missing}"


def test_configuration_reference_is_up_to_date() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is out of date: run `python -m imagequeue.configdoc --write`")


def test_reference_lists_every_setting_once_with_its_default() -> None:
    text = render()
    for name in Settings.model_fields:
        assert text.count(f"| `IMGQ_{name.upper()}` |") == 1, name
    assert "| `IMGQ_LEASE_S` | number (> 0) | `10.0` |" in text
    assert '| `IMGQ_WEBHOOK_RETRY_SCHEDULE_S` | list of number | `[5.0, 300.0' in text
    assert "| `IMGQ_BREAKER_MODE` | `shared` \\| `local` \\| `off` | `shared` |" in text


def test_the_generator_runs_as_a_command() -> None:
    out = subprocess.run([sys.executable, "-m", "imagequeue.configdoc"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout == render()
