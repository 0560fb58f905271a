"""docker-compose.yml is valid Compose and in step with the code (no Docker engine needed)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from cli.main import app
from imagequeue.settings import Settings
from tests.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
SCHEMA = Path(os.environ.get("IMGQ_COMPOSE_SCHEMA", REPO_ROOT.parent / "shared" / "compose-spec.json"))


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_specification() -> None:
    import jsonschema

    if not SCHEMA.is_file():  # the Compose specification's JSON schema, beside the checkout in CI
        message = (f"{SCHEMA} is not present: put compose-spec.json from "
                   "github.com/compose-spec/compose-spec there or set IMGQ_COMPOSE_SCHEMA")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(_compose())  # the spec says draft-07


def test_every_imgq_variable_in_compose_is_a_setting() -> None:
    fields = {f"IMGQ_{name.upper()}" for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        for var in service.get("environment") or {}:
            if var.startswith("IMGQ_"):
                assert var in fields, f"service {name} sets {var}, which no setting reads"


def test_every_service_command_is_an_imgq_command() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for name, service in _compose()["services"].items():
        if service.get("build"):
            assert service["command"][0] in commands, f"service {name}: unknown imgq command"


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    found = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [pattern.rstrip("*") for pattern in found]
    assert "throttle" in packages and "simulator" in packages
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile
        assert (REPO_ROOT / package / "__init__.py").is_file()
    assert Path(REPO_ROOT / "pyproject.toml").is_file()
