"""The outcomes loop in the cluster: the joiner and the bake loop share a SQLite store on a volume that outlives
the pod, as one pod with one replica; serving shadows the previous champion so a bake window has its evidence;
and every ctloop command a Deployment runs is one the CLI accepts, with these arguments."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer

from ctloop.app.cli import app
from ctloop.modelspec import ModelSpec
from tests.k8s.manifests import K8S, Manifest, build, named, of_kind, pod_spec

STORE_ENV = "CTLOOP_OUTCOMES_URL"


def outcomes_pod(overlay: list[Manifest]) -> Manifest:
    return pod_spec(named(overlay, "Deployment", "ctloop-outcomes"))


def container(spec: Manifest, name: str) -> Manifest:
    [found] = [c for c in spec["containers"] if c["name"] == name]
    return found


def env_of(c: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in c.get("env", [])}


def specs_of(overlay: list[Manifest]) -> dict[str, ModelSpec]:
    data = named(overlay, "ConfigMap", "ctloop-specs")["data"]
    return {key.removesuffix(".json"): ModelSpec.model_validate(json.loads(text)) for key, text in data.items()}


def option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_the_pod_runs_the_joiner_and_the_bake_loop(overlay: list[Manifest]) -> None:
    spec = outcomes_pod(overlay)
    commands = {c["name"]: [*c["command"], *c["args"]] for c in spec["containers"]}
    assert commands["outcomes"][:3] == ["ctloop", "outcomes", "run"]
    assert commands["bake"][:2] == ["ctloop", "bake"]
    assert "--once" not in commands["bake"], "the bake loop judges every round, not once"


def test_the_outcome_store_lives_on_a_claimed_volume_both_containers_share(overlay: list[Manifest]) -> None:
    """Joined labels (and the offsets committed after them) must survive a rescheduled pod: not an emptyDir."""
    spec = outcomes_pod(overlay)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}
    built_claims = {c["metadata"]["name"]: c for c in of_kind(overlay, "PersistentVolumeClaim")}
    urls = set()
    for name in ("outcomes", "bake"):
        c = container(spec, name)
        url = env_of(c)[STORE_ENV]["value"]
        assert url.startswith("sqlite:////"), f"{name}: {url} is not an absolute SQLite path"
        path = url.removeprefix("sqlite:///")
        mounts = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
        deepest = max(mounts, key=lambda m: len(m["mountPath"]))
        assert deepest["name"] in claims, f"{name}: {path} is on volume {deepest['name']}, not a claimed one"
        assert not deepest.get("readOnly"), name
        assert claims[deepest["name"]] in built_claims
        urls.add(url)
    assert len(urls) == 1, f"the joiner and the bake loop read different stores: {urls}"
    claim = built_claims[next(iter(claims.values()))]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_one_writer_of_the_store_ever(overlay: list[Manifest]) -> None:
    """SQLite on a ReadWriteOnce volume: one replica, and the old pod goes before a new one opens the file."""
    deployment = named(overlay, "Deployment", "ctloop-outcomes")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    targets = [h["spec"]["scaleTargetRef"]["name"] for h in of_kind(overlay, "HorizontalPodAutoscaler")]
    assert "ctloop-outcomes" not in targets


def test_landed_rows_and_the_bake_ledger_stay_out_of_minios_announced_prefix(overlay: list[Manifest]) -> None:
    """A landing under incoming/ would be announced to Kafka as new data and retrain every 30 seconds."""
    announced = "s3://ctloop-data/incoming/"
    setup = named(overlay, "Job", "ctloop-minio-setup")
    assert "incoming/" in json.dumps(setup), "the MinIO setup no longer announces incoming/: update this test"
    for name, spec in specs_of(overlay).items():
        if spec.retrain_uri is not None:
            assert not spec.retrain_uri.startswith(announced), name
    store = env_of(container(outcomes_pod(overlay), "bake"))["CTLOOP_STORE_URI"]["value"]
    assert store.startswith("s3://") and not store.startswith(announced)


def test_every_spec_with_a_bake_window_has_the_evidence_it_compares(overlay: list[Manifest]) -> None:
    """A bake compares the champion with `previous` scored in shadow on the same requests; a quality rule and a
    landing need a retrain_uri for the run they trigger to have data."""
    specs = specs_of(overlay)
    baked = {name for name, spec in specs.items() if spec.policy.bake is not None}
    assert baked, "no shipped spec sets policy.bake: the bake container would exit at start"
    args = pod_spec(named(overlay, "Deployment", "ctloop-serving"))["containers"][0]["args"]
    served = option(args, "--model")
    assert served in baked
    assert option(args, "--shadow") == "previous"
    for name, spec in specs.items():
        if spec.quality is not None or spec.policy.bake is not None:
            assert spec.retrain_uri, f"{name} judges live quality but lands its labelled rows nowhere"


def test_the_readme_overlay_without_bake_windows_builds_and_drops_the_shadow_and_the_bake_loop(
    built: dict[str, list[Manifest]], tmp_path: Path,
) -> None:
    """k8s/README.md's patches for clusters without bake windows, applied on top of `dev` as a user would."""
    readme = (K8S / "README.md").read_text()
    section = readme.index("## Outcomes: labels, live quality and the bake window")
    block = readme[readme.index("```yaml\npatches:", section):].removeprefix("```yaml\n")
    patches = block[: block.index("```")]
    base = os.path.relpath(K8S / "overlays" / "dev", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {base}\n{patches}")
    mine = build(tmp_path)
    serving = pod_spec(named(mine, "Deployment", "ctloop-serving"))["containers"][0]["args"]
    shipped = pod_spec(named(built["dev"], "Deployment", "ctloop-serving"))["containers"][0]["args"]
    assert "--shadow" not in serving and serving == [a for a in shipped if a not in ("--shadow", "previous")]
    assert [c["name"] for c in outcomes_pod(mine)["containers"]] == ["outcomes"]


def test_rollback_alerts_use_the_optional_monitor_webhook(overlay: list[Manifest]) -> None:
    webhook = env_of(container(outcomes_pod(overlay), "bake"))["CTLOOP_MONITOR_WEBHOOK"]["valueFrom"]
    assert webhook["secretKeyRef"] == {"name": "ctloop-monitor-webhook", "key": "url", "optional": True}


# --- the commands the Deployments run are ones the CLI takes --------------------------------------------


def parse(argv: list[str]) -> typer.Context:
    """Resolve `ctloop ARGS...` to its command and parse the arguments as the CLI would, without running it.
    (Typer carries its own click, so its classes are reached through the objects, not `import click`.)"""
    command = typer.main.get_command(app)
    parent = typer.Context(command, info_name="ctloop")
    rest = list(argv)
    while hasattr(command, "get_command"):  # a group: the next word names a subcommand
        sub = command.get_command(parent, rest[0])
        assert sub is not None, f"ctloop has no command {rest[0]!r} (in {argv})"
        command, rest = sub, rest[1:]
        parent = typer.Context(command, info_name=command.name, parent=parent)
    return command.make_context(command.name, rest, parent=parent.parent)


def ctloop_containers(overlay: list[Manifest]) -> list[tuple[str, list[str]]]:
    found = []
    for workload in of_kind(overlay, "Deployment"):
        for c in pod_spec(workload)["containers"]:
            if c.get("command") == ["ctloop"]:
                found.append((f"{workload['metadata']['name']}/{c['name']}", c["args"]))
    return found


def test_every_ctloop_container_runs_arguments_the_cli_accepts(overlay: list[Manifest],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)
    checked = ctloop_containers(overlay)
    assert {"ctloop-serving/serving", "ctloop-outcomes/outcomes", "ctloop-outcomes/bake"} <= {n for n, _ in checked}
    for where, args in checked:
        try:
            parse(args)
        except Exception as exc:  # typer's click errors: an unknown option, a bad value, a missing one
            pytest.fail(f"{where}: `ctloop {' '.join(args)}` is refused: {exc}")


def test_parse_catches_a_misspelt_option_and_a_bad_value() -> None:
    with pytest.raises(Exception, match="No such option: --horizn"):
        parse(["outcomes", "run", "--horizn", "1h"])
    with pytest.raises(Exception, match="valid number"):
        parse(["bake", "--every", "soon"])
    assert parse(["serve", "--model", "m", "--shadow", "previous"]).params["shadow"] == "previous"
