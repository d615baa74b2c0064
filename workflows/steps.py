"""The retrain workflow's steps: the Python functions Hera's runner calls in each pod.

Each function reads the settings its environment gives (`current_settings()`), calls the trainer or
deploy code, and returns its outputs as a Hera `Output`. A failure the next attempt may not repeat
(a registry or object store that did not answer) exits with TRANSIENT_EXIT, which the template's
retry strategy retries with backoff; any other failure fails the step at once.
"""

# No `from __future__ import annotations`: Hera reads these annotations when it builds the template.

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from hera.workflows import Artifact, Parameter
from hera.workflows.io import Output

from ctloop.evaluation import Evaluation
from ctloop.modelspec import ModelSpec, TrainParams, load_spec
from ctloop.transient import TransientError
from ctloop.workflows.step_context import current_settings

log = logging.getLogger(__name__)

TRANSIENT_EXIT = 75
"""EX_TEMPFAIL: the exit code the retry strategy's expression retries on."""

ACTOR = "ctloop-workflow"


@contextmanager
def transient_exits() -> Iterator[None]:
    """Turn transient infrastructure errors into exit code TRANSIENT_EXIT; let the rest through."""
    from ctloop.transient import is_transient

    try:
        yield
    except Exception as exc:
        if not is_transient(exc):
            raise
        print(f"transient failure, exit {TRANSIENT_EXIT} for a retry: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(TRANSIENT_EXIT) from exc


def _snapshot(path: str):
    from ctloop.snapshot import Snapshot

    return Snapshot.model_validate_json(Path(path).read_text())


def _spec(model: str, params: str = "{}") -> ModelSpec:
    """The model's spec, with the run's parameter overrides (a JSON object) applied: to the free-form
    `params` of a user's trainer, to the `train` section of the built-in one."""
    spec = load_spec(model, current_settings())
    overrides = json.loads(params or "{}")
    if not isinstance(overrides, dict):
        raise ValueError(f"params must be a JSON object of training parameters, got {params!r}")
    if not overrides:
        return spec
    parsed = {k: _json_or_text(v) for k, v in overrides.items()}
    if spec.trainer is not None:
        return spec.model_copy(update={"params": {**spec.params, **parsed}})
    unknown = sorted(set(overrides) - set(TrainParams.model_fields))
    if unknown:
        raise ValueError(f"unknown training parameters {unknown}; known: {sorted(TrainParams.model_fields)}")
    train = TrainParams.model_validate({**spec.train.model_dump(), **parsed})
    return spec.model_copy(update={"train": train})


def _json_or_text(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


# --- snapshot ----------------------------------------------------------------------------------


class SnapshotOutput(Output):
    digest: Annotated[str, Parameter(name="digest", description="content digest of the pinned data")]
    train_key: Annotated[str, Parameter(name="train-key", description="memoization key of the train step")]
    train_image: Annotated[str, Parameter(name="train-image", description="image the train step runs")]
    train_pod_patch: Annotated[str, Parameter(name="train-pod-patch", description="the spec's resources")]
    snapshot: Annotated[str, Artifact(name="snapshot")]


def snapshot(
    model: Annotated[str, Parameter(name="model")],
    data_uri: Annotated[str, Parameter(name="data-uri")],
    code_version: Annotated[str, Parameter(name="code-version")],
    params: Annotated[str, Parameter(name="params")],
) -> SnapshotOutput:
    """Pin the objects under the data URI. The train key is the run's idempotency key on the pinned digest, with
    the trainer's own code version in it: changed trainer code retrains, unchanged code hits the memo cache."""
    from ctloop.snapshot import take_snapshot
    from ctloop.trainer.version import run_code_version
    from ctloop.workflows.engine import idempotency_key

    spec = _spec(model, params)
    with transient_exits():
        pinned = take_snapshot(data_uri, s3_endpoint_url=current_settings().s3_endpoint_url)
    key = idempotency_key(model, pinned.digest, run_code_version(spec, code_version), json.loads(params or "{}"))
    return SnapshotOutput(digest=pinned.digest, train_key=key, train_image=spec.image or current_settings().image,
                          train_pod_patch=train_pod_patch(spec), snapshot=pinned.model_dump_json())


def train_pod_patch(spec: ModelSpec) -> str:
    """The spec's `resources` as an Argo podSpecPatch of the train step's container ("{}": the template's own)."""
    if spec.resources is None:
        return "{}"
    r = spec.resources
    limits: dict[str, str | int] = {"memory": r.memory}
    if r.gpus:
        limits["nvidia.com/gpu"] = r.gpus
    resources = {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": limits}
    return json.dumps({"containers": [{"name": "main", "resources": resources}]}, sort_keys=True)


# --- validate ----------------------------------------------------------------------------------


class ValidateOutput(Output):
    rows: Annotated[int, Parameter(name="rows")]


def validate(
    model: Annotated[str, Parameter(name="model")],
    snapshot: Annotated[str, Artifact(name="snapshot", loader=None)],
) -> ValidateOutput:
    """Check every pinned file against the model's data schema; a violation fails the workflow here."""
    from ctloop.trainer.validation import validate as validate_snapshot

    spec = _spec(model)
    with transient_exits():
        report = validate_snapshot(_snapshot(snapshot), spec.data, s3_endpoint_url=current_settings().s3_endpoint_url)
    return ValidateOutput(rows=report.rows)


# --- train -------------------------------------------------------------------------------------


class TrainOutput(Output):
    run_id: Annotated[str, Parameter(name="run-id")]
    model_uri: Annotated[str, Parameter(name="model-uri")]
    data_digest: Annotated[str, Parameter(name="data-digest")]
    weight_hash: Annotated[str, Parameter(name="weight-hash")]
    metrics: Annotated[str, Parameter(name="metrics", description="holdout metrics as a JSON object")]
    trainer_version: Annotated[str, Parameter(name="trainer-version", description="code version of the trainer")]


def train(
    model: Annotated[str, Parameter(name="model")],
    snapshot: Annotated[str, Artifact(name="snapshot", loader=None)],
    train_key: Annotated[str, Parameter(name="train-key")],
    event_id: Annotated[str, Parameter(name="event-id")],
    params: Annotated[str, Parameter(name="params")],
    image: Annotated[str, Parameter(name="image", description="the image this step runs (the spec's, if any)")],
    pod_patch: Annotated[str, Parameter(name="pod-patch", description="podSpecPatch from the spec's resources")],
) -> TrainOutput:
    """Train on exactly the pinned data and log the MLflow run (memoized on `train-key`). `image` and
    `pod-patch` shape the pod this runs in (the template substitutes them); here they are only logged."""
    from ctloop.trainer.train import train as train_model

    settings = current_settings()
    spec = _spec(model, params)
    log.info("training %s (train key %s, image %s, pod patch %s)", model, train_key, image, pod_patch)
    with transient_exits():
        result = train_model(_snapshot(snapshot), spec, tracking_uri=settings.tracking_uri,
                             event_id=event_id or None, s3_endpoint_url=settings.s3_endpoint_url)
    return TrainOutput(run_id=result.run_id, model_uri=result.model_uri, data_digest=result.data_digest,
                       weight_hash=result.weight_hash, metrics=json.dumps(result.metrics, sort_keys=True),
                       trainer_version="" if _builtin(spec) else result.trainer_version)


def _builtin(spec: ModelSpec) -> bool:
    """The built-in trainer is ctloop's own code, which the run's `code-version` already names (a step in an image
    would otherwise name it again by its package version, apart from the same code run in-process)."""
    return spec.trainer is None and not spec.image


# --- evaluate ----------------------------------------------------------------------------------


class EvaluateOutput(Output):
    promote: Annotated[bool, Parameter(name="promote", description="whether the policy promotes the challenger")]
    reasons: Annotated[str, Parameter(name="reasons", description="the policy's reasons, a JSON list")]
    champion_version: Annotated[str, Parameter(name="champion-version")]
    evaluation: Annotated[str, Artifact(name="evaluation")]


def evaluate(
    model: Annotated[str, Parameter(name="model")],
    snapshot: Annotated[str, Artifact(name="snapshot", loader=None)],
    model_uri: Annotated[str, Parameter(name="model-uri")],
) -> EvaluateOutput:
    """Score challenger and current champion on the same held-out data and apply the promotion policy: the one
    place the workflow decides; promote and register act on this decision (`promote`, `reasons`)."""
    import tempfile

    from ctloop.deploy.policy import decide
    from ctloop.deploy.registry import CHAMPION, Registry
    from ctloop.trainer.evaluate import evaluate as score
    from ctloop.trainer.evaluate import load_holdout

    settings = current_settings()
    spec = _spec(model)
    with transient_exits(), tempfile.TemporaryDirectory(prefix="ctloop-holdout-") as workdir:
        holdout = load_holdout(_snapshot(snapshot), spec, Path(workdir), s3_endpoint_url=settings.s3_endpoint_url)
        champion = Registry(settings.tracking_uri).alias(model, CHAMPION)
        evaluation = score(model_uri, f"models:/{model}/{champion}" if champion else None, holdout, spec,
                           champion_version=champion, tracking_uri=settings.tracking_uri)
    decision = decide(evaluation, spec.policy)
    return EvaluateOutput(promote=decision.promote, reasons=json.dumps(list(decision.reasons)),
                          champion_version=champion or "", evaluation=evaluation.model_dump_json())


# --- promote / register ------------------------------------------------------------------------


class Unannounced(TransientError):
    """A committed alias move still in the outbox (the bus did not take its event): worth another try."""


class VersionOutput(Output):
    version: Annotated[str, Parameter(name="version")]
    promoted: Annotated[bool, Parameter(name="promoted")]


def _provenance(event_id: str, data_digest: str, code_version: str, run_id: str,
                trainer_version: str = "") -> dict[str, str | None]:
    """The version's lineage. Its code is ctloop's and, for a user's trainer, the trainer's too (the digest of
    its package or image), so a version names exactly the code that made it."""
    if trainer_version and trainer_version != code_version:
        code_version = f"{code_version}+trainer:{trainer_version}"
    return {"event_id": event_id or None, "data_digest": data_digest, "code_version": code_version,
            "run_id": run_id}


def _decision(promote: bool, reasons: str):
    """The evaluate step's decision, passed on rather than made again."""
    from ctloop.deploy.policy import Decision

    listed = json.loads(reasons or "[]")
    if not isinstance(listed, list):
        raise ValueError(f"reasons must be a JSON list of strings, got {reasons!r}")
    return Decision(promote, tuple(map(str, listed)))


def promote(
    model: Annotated[str, Parameter(name="model")],
    model_uri: Annotated[str, Parameter(name="model-uri")],
    evaluation: Annotated[str, Artifact(name="evaluation", loader=None)],
    run_id: Annotated[str, Parameter(name="run-id")],
    data_digest: Annotated[str, Parameter(name="data-digest")],
    event_id: Annotated[str, Parameter(name="event-id")],
    code_version: Annotated[str, Parameter(name="code-version")],
    trainer_version: Annotated[str, Parameter(name="trainer-version")],
    reasons: Annotated[str, Parameter(name="reasons")],
) -> VersionOutput:
    """Register the challenger and, if the evaluate step's decision still holds against the champion of this
    moment, make it champion (read-verify-write under the model's lock; announced on the models topic)."""
    from ctloop.bus_factory import open_bus
    from ctloop.deploy import outbox
    from ctloop.deploy.promotion import apply_decision, lineage_id
    from ctloop.deploy.registry import Registry

    settings = current_settings()
    spec = _spec(model)
    scored = Evaluation.model_validate_json(Path(evaluation).read_text())
    provenance = _provenance(event_id, data_digest, code_version, run_id, trainer_version)
    with transient_exits():  # a broker that is down now (a restart) is worth another try, like the registry
        bus = open_bus(settings)
    try:
        with transient_exits():
            version, result = apply_decision(
                settings.tracking_uri, model, model_uri, scored, _decision(True, reasons), provenance, actor=ACTOR,
                bus=bus, topic=settings.topics.models, policy=spec.policy,
                registration_id=lineage_id(model, provenance),
            )
            # A move whose event the bus did not take stays in the outbox; the step ends only once it is announced,
            # so its retry (which finds the move already made) publishes it.
            if outbox.pending(Registry(settings.tracking_uri), model):
                raise Unannounced(f"the promotion of {model} is committed but its event is not yet on the bus")
    finally:
        bus.close()
    return VersionOutput(version=version, promoted=result is not None)


def register(
    model: Annotated[str, Parameter(name="model")],
    model_uri: Annotated[str, Parameter(name="model-uri")],
    evaluation: Annotated[str, Artifact(name="evaluation", loader=None)],
    run_id: Annotated[str, Parameter(name="run-id")],
    data_digest: Annotated[str, Parameter(name="data-digest")],
    event_id: Annotated[str, Parameter(name="event-id")],
    code_version: Annotated[str, Parameter(name="code-version")],
    trainer_version: Annotated[str, Parameter(name="trainer-version")],
    reasons: Annotated[str, Parameter(name="reasons")],
) -> VersionOutput:
    """Register a rejected challenger with the evaluate step's reasons, so it is on record but never champion."""
    from ctloop.deploy.promotion import lineage_id, register_challenger

    settings = current_settings()
    scored = Evaluation.model_validate_json(Path(evaluation).read_text())
    provenance = _provenance(event_id, data_digest, code_version, run_id, trainer_version)
    with transient_exits():
        version = register_challenger(
            settings.tracking_uri, model, model_uri, provenance=provenance, evaluation=scored,
            decision=_decision(False, reasons), registration_id=lineage_id(model, provenance),
        )
    return VersionOutput(version=version, promoted=False)


# --- exit handler ------------------------------------------------------------------------------


def run_finished(
    run_id: Annotated[str, Parameter(name="run-id")],
    model: Annotated[str, Parameter(name="model")],
    status: Annotated[str, Parameter(name="status")],
    idempotency_key: Annotated[str, Parameter(name="idempotency-key")],
    event_id: Annotated[str, Parameter(name="event-id")],
    failures: Annotated[str, Parameter(name="failures")],
) -> None:
    """Announce the run's end (ctloop.run.finished) on the runs topic, whatever the outcome."""
    from ctloop.bus_factory import open_bus
    from ctloop.events import RunFinished, new_event, to_bytes

    settings = current_settings()
    payload = RunFinished(
        run_id=run_id, model=model, status=status if status in ("Succeeded", "Failed", "Error") else "Error",
        idempotency_key=idempotency_key or None, trigger_event_id=event_id or None, error=_failure_text(failures),
    )
    with transient_exits():  # a broker that is down now (a restart) is worth another try, like the registry
        bus = open_bus(settings)
    try:
        with transient_exits():
            bus.publish(settings.topics.runs, to_bytes(new_event(payload)), key=model)
            bus.flush()
    finally:
        bus.close()


def _failure_text(failures: str) -> str | None:
    """Argo's `workflow.failures` (a JSON list of failed nodes) in one line."""
    try:
        nodes = json.loads(failures) if failures and failures != "null" else []
    except ValueError:
        return failures[:2000]
    text = "; ".join(f"{n.get('displayName', '?')}: {n.get('message', '')}" for n in nodes if isinstance(n, dict))
    return text[:2000] or None
