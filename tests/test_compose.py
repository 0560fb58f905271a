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


def test_every_service_command_is_an_imgq_command_with_its_options() -> None:
    commands = get_command(app).commands  # type: ignore[attr-defined]
    for name, service in _compose()["services"].items():
        if service.get("build"):
            command, *args = service["command"]
            assert command in commands, f"service {name}: unknown imgq command {command}"
            # Parses the options as `imgq` would (an unknown option or a bad value raises).
            commands[command].make_context(command, list(args))


def test_compose_runs_the_scale_out_layout() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres", "rabbitmq", "minio", "api", "scheduler", "worker",
            "simulator"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]  # the breaker state survives restarts
    assert services["scheduler"]["deploy"]["replicas"] == 2  # active and standby
    assert "replicas" not in services["worker"].get("deploy", {})  # --scale worker=N
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["redis-broker"]["profiles"] == ["redis-broker"]  # the other broker
    env = services["worker"]["environment"]
    assert env["IMGQ_BROKER_URL"].startswith("${IMGQ_BROKER_URL:-amqp://")
    assert env["IMGQ_BLOB_URL"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    for name, service in services.items():
        if "profiles" in service or service.get("command") in (["migrate"],) or name.endswith(
                ("-bucket", "-catalogue")):
            continue  # one-shot steps and profile-only services
        assert service.get("restart") == "unless-stopped", f"{name} has no restart policy"
        assert "healthcheck" in service, f"{name} has no health check"


def test_warm_shutdown_fits_inside_dockers_stop_grace() -> None:
    worker = _compose()["services"]["worker"]
    grace_s = float(worker["environment"]["IMGQ_WORKER_SHUTDOWN_GRACE_S"])
    assert worker["stop_grace_period"].endswith("s")
    assert float(worker["stop_grace_period"][:-1]) > grace_s


def test_no_secret_is_written_into_the_compose_file() -> None:
    """Passwords and keys come from the environment (.env); the file holds only demo defaults
    behind ``${VAR:-default}``, never a bare value."""
    secretish = ("PASSWORD", "SECRET", "API_KEY", "API_TOKEN", "ADMIN_TOKEN")
    for name, service in _compose()["services"].items():
        for var, value in (service.get("environment") or {}).items():
            if any(word in var for word in secretish):
                assert str(value).startswith("${"), f"service {name}: {var} is written in the file"
    assert "USER imgq" in (REPO_ROOT / "Dockerfile").read_text()  # the image does not run as root


def test_the_demo_env_file_names_real_settings() -> None:
    fields = {f"IMGQ_{name.upper()}" for name in Settings.model_fields}
    lines = [line for line in (REPO_ROOT / "compose.demo.env").read_text().splitlines()
             if line and not line.startswith("#")]
    for line in lines:
        var = line.partition("=")[0]
        assert var == "COMPOSE_PROFILES" or var in fields, var


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
