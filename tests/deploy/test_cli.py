"""The deploy commands end to end: `ctloop models|promote|rollback` in-process, `ctloop serve` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from ctloop.app.cli import app
from ctloop.deploy.registry import Registry
from tests.fixtures.mlflow_server import free_port

pytestmark = pytest.mark.mlflow_server


@pytest.fixture
def env(mlflow_server: str, tmp_path: Path) -> dict[str, str]:
    return {"CTLOOP_MLFLOW_TRACKING_URI": mlflow_server, "CTLOOP_HOME": str(tmp_path / "home")}


@pytest.fixture
def versions(mlflow_server: str, model_name: str, constant_model_uri: str) -> list[str]:
    registry = Registry(mlflow_server)
    return [registry.create_version(model_name, constant_model_uri, run_id=None, tags={}).version for _ in range(2)]


def ctloop(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


def test_promote_show_rollback_and_list(env, model_name, versions):
    v1, v2 = versions
    assert ctloop(env, "promote", model_name, v1, "--reason", "first", "--actor", "alice").exit_code == 0
    promoted = ctloop(env, "promote", model_name, v2, "--reason", "better on segment B", "--actor", "alice")
    assert promoted.exit_code == 0, promoted.output
    assert f"champion {v1} -> {v2}" in promoted.output

    listed = json.loads(ctloop(env, "models", "list", "--json").output)
    assert {"name": model_name, "champion": v2, "previous": v1, "challenger": None} in listed

    rolled = ctloop(env, "rollback", model_name, "--reason", "latency", "--actor", "bob")
    assert rolled.exit_code == 0 and f"{v2} -> {v1}" in rolled.output

    shown = json.loads(ctloop(env, "models", "show", model_name, "--json").output)
    assert shown["aliases"] == {"champion": v1}
    assert [(e["action"], e["actor"], e["reason"]) for e in shown["audit"]] == [
        ("promote", "alice", "first"), ("promote", "alice", "better on segment B"), ("rollback", "bob", "latency")]
    text = ctloop(env, "models", "show", model_name).output
    assert "rollback" in text and "better on segment B" in text


def test_serve_refuses_to_shadow_anything_but_challenger_or_previous(env, model_name):
    refused = ctloop(env, "serve", "--model", model_name, "--shadow", "champion")
    assert refused.exit_code == 2 and "--shadow must be challenger or previous" in refused.output


def test_refusals_exit_2_and_change_nothing(env, model_name, versions):
    missing = ctloop(env, "promote", model_name, "99", "--reason", "typo")
    assert missing.exit_code == 2 and "has no version '99'" in missing.output
    no_previous = ctloop(env, "rollback", model_name)
    assert no_previous.exit_code == 2 and "no 'previous' version" in no_previous.output
    unknown = ctloop(env, "models", "show", "no-such-model")
    assert unknown.exit_code == 2 and "no registered model 'no-such-model'" in unknown.output
    shown = json.loads(ctloop(env, "models", "show", model_name, "--json").output)
    assert shown["aliases"] == {} and shown["audit"] == []


def test_serve_command_serves_the_champion_until_interrupted(env, model_name, versions, tmp_path):
    assert ctloop(env, "promote", model_name, versions[0], "--reason", "serve me").exit_code == 0
    port = free_port()
    ctloop_bin = Path(sys.executable).with_name("ctloop")
    # The registry comes from ctloop's settings alone: this process's MLFLOW_TRACKING_URI (which
    # mlflow.set_tracking_uri exports) once hid that serving looked for the model in ./mlflow.db.
    clean = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    proc = subprocess.Popen([str(ctloop_bin), "serve", "--model", model_name, "--port", str(port)], cwd=tmp_path,
                            env={**clean, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        response = requests.post(f"http://127.0.0.1:{port}/predict", json={"rows": [{"x": 1, "y": 2}]}, timeout=10)
        answer = response.json()
        assert len(answer.pop("ids")) == 1
        assert answer == {"predictions": [1.0], "model": model_name, "version": versions[0]}
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
