"""``imgq models`` and ``imgq breaker`` against a real Redis; a broken catalogue at start-up.

The breaker commands are run in process (typer's CliRunner) and read back through an independent
store; the start-up checks run ``imgq`` as a real subprocess, since what they prove is the exit
code and the absence of a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from breaker import BreakerStore, Outcome
from breaker.factory import make_breaker_store
from cli.main import app
from cli.stack import free_port
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from tests.conftest import REPO_ROOT

GEMINI = "gemini-3-pro-image-preview"
VENDOR_KEYS = ("GEMINI_API_KEY", "ARK_API_KEY", "OPENAI_API_KEY", "BFL_API_KEY",
               "RECRAFT_API_TOKEN", "AGGREGATOR_API_KEY")


@pytest.fixture()
def env(clean_redis: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI's environment: the test Redis, no vendor keys but OpenAI's, no simulator."""
    monkeypatch.setenv("IMGQ_REDIS_URL", clean_redis)
    for name in (*VENDOR_KEYS, "IMGQ_CATALOGUE_PATH", "IMGQ_BREAKER_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    return clean_redis


@pytest.fixture()
def store(env: str) -> BreakerStore:
    """An independent view of the shared breaker, built as workers build theirs."""
    settings = Settings()
    return make_breaker_store(settings, load_catalogue(settings.catalogue_path).models)


def imgq(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def open_by_failures(store: BreakerStore, model: str, calls: int = 5) -> None:
    for _ in range(calls):
        store.record(model, Outcome.FAILURE, 0.1, probe=False)


def test_models_shows_a_model_without_key_as_not_configured_with_the_variable_to_set(env: str) -> None:
    code, out, _ = imgq("models")
    assert code == 0
    assert f"{GEMINI} is not configured: set GEMINI_API_KEY" in out
    assert "gpt-image-1.5 is not configured" not in out  # its key is set
    for model in load_catalogue().models:
        assert model in out
    assert "route default: " + GEMINI in out


def test_models_json_gives_configuration_and_breaker_state_of_each_model(
        env: str, store: BreakerStore) -> None:
    store.force_open(GEMINI, "incident")
    code, out, _ = imgq("models", "--json")
    assert code == 0
    rows = {row["model"]: row for row in json.loads(out)["models"]}
    assert set(rows) == set(load_catalogue().models)
    assert rows[GEMINI]["configured"] is False
    assert rows[GEMINI]["missing_key_hint"] == "set GEMINI_API_KEY"
    assert rows["gpt-image-1.5"]["configured"] is True
    assert rows["gpt-image-1.5"]["missing_key_hint"] is None
    assert (rows[GEMINI]["breaker_state"], rows[GEMINI]["health"]) == ("forced_open", "red")
    assert (rows["flux-2-pro"]["breaker_state"], rows["flux-2-pro"]["health"]) == ("closed", "green")


def test_simulator_catalogue_writes_the_catalogue_whose_unkeyed_models_are_keyless(
        env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sim" / "catalogue.json"
    code, out, _ = imgq("simulator-catalogue", "--simulator-url", "http://127.0.0.1:8765",
                        "--out", str(path))
    assert code == 0 and f"wrote {path}" in out
    monkeypatch.setenv("IMGQ_CATALOGUE_PATH", str(path))

    code, out, _ = imgq("models", "--json")
    assert code == 0
    listing = json.loads(out)
    rows = {row["model"]: row for row in listing["models"]}
    assert listing["catalogue"] == str(path)
    assert (rows[GEMINI]["keyless"], rows[GEMINI]["configured"]) == (True, True)
    assert rows["gpt-image-1.5"]["keyless"] is False  # its key is set: it keeps its vendor
    code, out, _ = imgq("models")
    gemini_row = next(line for line in out.splitlines() if line.strip().startswith(GEMINI))
    assert "keyless" in gemini_row and "is not configured" not in out


def test_models_still_lists_the_catalogue_when_redis_does_not_answer(
        env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    code, out, _ = imgq("models", "--json")
    rows = json.loads(out)["models"]
    assert code == 0
    assert len(rows) == len(load_catalogue().models)
    assert all(row["breaker_state"] is None and row["health"] is None for row in rows)


def test_breaker_lists_every_model_with_window_figures_and_last_transitions(
        env: str, store: BreakerStore) -> None:
    open_by_failures(store, GEMINI)
    code, out, _ = imgq("breaker", "--json")
    assert code == 0
    reports = json.loads(out)["models"]
    assert set(reports) == set(load_catalogue().models)
    gemini = reports[GEMINI]
    assert (gemini["state"], gemini["colour"]) == ("open", "red")
    assert gemini["window"] == {"calls": 5, "failures": 5, "slow": 0, "failure_rate": 1.0}
    assert gemini["open_until"] is not None
    assert [(t["from"], t["to"]) for t in gemini["last_transitions"]] == [("closed", "open")]
    assert reports["flux-2-pro"]["last_transitions"] == []

    code, out, _ = imgq("breaker")
    assert code == 0
    gemini_row = next(line for line in out.splitlines() if line.strip().startswith(GEMINI))
    assert "open" in gemini_row and "red" in gemini_row and "5/5 (100%)" in gemini_row
    assert f"{GEMINI}: closed → open" in out


def test_breaker_actions_change_the_shared_breaker_every_worker_reads(
        env: str, store: BreakerStore) -> None:
    code, out, _ = imgq("breaker", "open", GEMINI, "--reason", "vendor incident 42")
    assert code == 0 and "forced_open" in out
    health = store.snapshot(GEMINI)
    assert health.state == "forced_open" and health.colour == "red"
    assert health.override_reason is not None and "vendor incident 42" in health.override_reason
    assert not store.allow(GEMINI).allowed

    assert imgq("breaker", "disable", GEMINI)[0] == 0
    assert store.snapshot(GEMINI).state == "disabled"
    open_by_failures(store, GEMINI)  # a disabled breaker counts nothing and never opens
    assert store.allow(GEMINI).allowed

    assert imgq("breaker", "close", GEMINI)[0] == 0
    assert store.snapshot(GEMINI).state == "closed"

    open_by_failures(store, GEMINI)
    assert store.snapshot(GEMINI).state == "open"
    code, out, _ = imgq("breaker", "reset", GEMINI, "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["state"], report["window"]["calls"]) == ("closed", 0)
    assert report["last_transitions"][0]["reason"] == "reset"

    states = [(e.from_state, e.to_state) for e in reversed(store.events(GEMINI))]
    assert states == [("closed", "forced_open"), ("forced_open", "disabled"),
                      ("disabled", "closed"), ("closed", "open"), ("open", "closed")]


def test_breaker_action_on_an_unknown_model_names_the_known_ones(env: str) -> None:
    code, _, err = imgq("breaker", "open", "gemini-9-ultra")
    assert code == 2
    assert "unknown model 'gemini-9-ultra'" in err
    assert GEMINI in err


def test_breaker_says_which_redis_it_cannot_reach(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("IMGQ_REDIS_URL", url)
    code, _, err = imgq("breaker", "reset", GEMINI)
    assert code == 1
    assert f"cannot reach the breaker store at {url}" in err


@pytest.fixture()
def broken_catalogue(tmp_path: Path) -> Path:
    text = load_catalogue().source.read_text(encoding="utf-8")
    path = tmp_path / "catalogue.toml"
    path.write_text(text.replace('wire_format = "bfl"', 'wire_format = "bfl-v2"', 1), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", [["models"], ["breaker"], ["breaker", "reset", GEMINI],
                                     ["api"], ["worker"], ["scheduler"], ["up"], ["demo"]])
def test_a_broken_catalogue_stops_start_up_with_file_entry_and_reason(
        command: list[str], broken_catalogue: Path, env: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", *command], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "IMGQ_CATALOGUE_PATH": str(broken_catalogue),
                            "IMGQ_REDIS_URL": env, "COLUMNS": "200"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"file:   {broken_catalogue}" in result.stderr
    assert "entry:  model 'flux-2-pro'" in result.stderr
    assert "reason: wire_format: unknown value 'bfl-v2'" in result.stderr


@pytest.mark.parametrize("command", [["models"], ["worker"], ["scheduler"], ["api"], ["up"]])
def test_a_bad_setting_stops_start_up_naming_the_variable_and_the_problem(
        command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", *command], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200",
                            "IMGQ_WORKER_CONCURRENCY": "lots", "IMGQ_BREAKER_MODE": "maybe"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "IMGQ_WORKER_CONCURRENCY='lots': Input should be a valid integer" in result.stderr
    assert "IMGQ_BREAKER_MODE='maybe': Input should be 'shared', 'local' or 'off'" in result.stderr


@pytest.fixture()
def database(env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'imgq.db'}"
    monkeypatch.setenv("IMGQ_DATABASE_URL", url)
    return url


def tenant_row(url: str, name: str) -> dict[str, object]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, rpm, max_queued, max_running, budget_usd, "
                                    "budget_period FROM tenants WHERE name = :n"), {"n": name})
            return dict(row.mappings().one())
    finally:
        engine.dispose()


def test_tenant_create_with_limits_then_set_changes_only_those_given(database: str,
                                                                    env: str) -> None:
    import redis

    from scheduler.tenants.quotas import running_caps

    code, out, _ = imgq("tenant", "create", "acme", "--rpm", "5", "--max-queued", "10",
                        "--budget-usd", "2.5", "--budget-period", "day")
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("imgq_")  # the key, last, for scripts
    assert "rpm 5/min (own)" in out and "max_running no limit (default)" in out
    assert "budget_usd $2.5 per day (own)" in out
    row = tenant_row(database, "acme")
    assert (row["rpm"], row["max_queued"], row["max_running"], row["budget_usd"],
            row["budget_period"]) == (5, 10, None, 2.5, "day")

    code, out, _ = imgq("tenant", "set", "acme", "--rpm", "7", "--max-queued", "default",
                        "--max-running", "2")
    assert code == 0, out
    assert "rpm 7/min (own)" in out and "max_queued 100000 (default)" in out
    assert "max_running 2 (own)" in out
    row = tenant_row(database, "acme")
    assert (row["rpm"], row["max_queued"], row["max_running"], row["budget_usd"]) == (7, None, 2,
                                                                                      2.5)
    client = redis.Redis.from_url(env)
    try:
        assert running_caps(client)[str(row["id"])] == 2  # the dispatcher applies it at once
    finally:
        client.close()

    code, out, _ = imgq("tenant", "set", "acme", "--rpm", "0", "--budget-usd", "default")
    assert code == 0 and "rpm no limit (own)" in out and "budget_usd no limit (default)" in out


def test_tenant_set_refuses_unknown_tenants_and_bad_values(database: str) -> None:
    assert imgq("tenant", "create", "acme")[0] == 0
    code, out, _ = imgq("tenant", "set", "nobody", "--rpm", "5")
    assert code == 1 and "no tenant named 'nobody'" in out
    code, _, err = imgq("tenant", "set", "acme", "--rpm", "lots")
    assert code == 2 and "--rpm" in err
    code, _, err = imgq("tenant", "set", "acme", "--max-running", "-1")
    assert code == 2 and "--max-running" in err
    code, _, err = imgq("tenant", "create", "other", "--budget-period", "week")
    assert code == 2 and "--budget-period" in err
