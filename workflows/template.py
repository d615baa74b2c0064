"""The retrain → evaluate → promote WorkflowTemplate, defined once in Hera (Argo Workflows v4).

Argo runs it in the cluster; `LocalEngine` walks the same object on one machine. DAG:

    snapshot → validate → train (memoized, GPU, retried) → evaluate ─┬─ promote   (when promote; mutex per model)
                                                                     └─ register  (when not; rejected on record)
    onExit: run-finished → publishes ctloop.run.finished with the workflow's status

The train step runs the image the model's spec pins (`image`, by digest; the default image otherwise) with
the spec's `resources` as a podSpecPatch: the snapshot step reads the spec and passes both on. Evaluate
decides promotion once; promote and register act on its `promote` and `reasons` outputs.

Cluster names it relies on (shipped in k8s/base): ConfigMaps `ctloop-config`, `ctloop-kafka`
(environment), `ctloop-specs` (model specs at /ctloop/specs), the memoization cache ConfigMap
`ctloop-train-cache` (label `workflows.argoproj.io/configmap-type: Cache`), the Secret `ctloop-s3`
(keys `access-key-id`, `secret-access-key`) and the bucket `mlflow-artifacts` for step artifacts.
"""

from __future__ import annotations

from urllib.parse import urlparse

from hera.workflows import (
    DAG,
    ConfigMapEnvFrom,
    ConfigMapVolume,
    EmptyDirVolume,
    Env,
    Parameter,
    Resources,
    RetryStrategy,
    S3Artifact,
    SecretEnv,
    WorkflowTemplate,
    models,
    script,
)

from ctloop.settings import Settings
from ctloop.workflows import steps

TEMPLATE_NAME = "ctloop-retrain"
TRAIN_CACHE = "ctloop-train-cache"
# Argo's backstop for the admission gateway's GPU cap: a semaphore every retrain Workflow takes, sized in the
# ConfigMap below (`k8s/base/generated/synchronization.yaml`; the GPU overlay sets it to the cluster's GPUs).
SYNC_CONFIGMAP = "ctloop-synchronization"
SYNC_KEY = "retrain-workflows"
# A finished Workflow's object (and so its name, which Argo's duplicate refusal uses) is kept this long; the
# gateway's own record of keys that ran outlives it.
KEEP_FINISHED_S = 7 * 24 * 3600
ARTIFACT_BUCKET = "mlflow-artifacts"
ARTIFACT_PREFIX = "workflows/{{workflow.name}}"
S3_SECRET = "ctloop-s3"
S3_ACCESS_KEY = "access-key-id"
S3_SECRET_KEY = "secret-access-key"
DEFAULT_S3_ENDPOINT = "http://ctloop-minio:9000"
WORKFLOW_DEADLINE_S = 6 * 3600
TRAIN_DEADLINE_S = 4 * 3600
TRAIN_CACHE_MAX_AGE = "720h"
HOME = "/ctloop"

PARAMETERS = ("model", "data-uri", "event-id", "trigger", "data-digest", "idempotency-key", "code-version", "params")


def transient_retry() -> RetryStrategy:
    """Retry only what the step reported as transient (exit 75), with exponential backoff."""
    return RetryStrategy(
        limit=3,
        retry_policy="Always",
        expression=f"asInt(lastRetry.exitCode) == {steps.TRANSIENT_EXIT}",
        backoff=models.Backoff(duration="5s", factor=2, max_duration="5m"),
    )


def _s3(name: str, settings: Settings) -> S3Artifact:
    """An output artifact on S3/MinIO; credentials by Secret reference only."""
    endpoint = urlparse(settings.s3_endpoint_url or DEFAULT_S3_ENDPOINT)
    return S3Artifact(
        name=name,
        path=f"/tmp/hera-outputs/artifacts/{name}",
        bucket=ARTIFACT_BUCKET,
        key=f"{ARTIFACT_PREFIX}/{name}.json",
        endpoint=endpoint.netloc,
        insecure=endpoint.scheme != "https",
        access_key_secret=models.SecretKeySelector(name=S3_SECRET, key=S3_ACCESS_KEY),
        secret_key_secret=models.SecretKeySelector(name=S3_SECRET, key=S3_SECRET_KEY),
        archive=models.ArchiveStrategy(none=models.NoneStrategy()),
    )


def _pod(settings: Settings) -> dict:
    """What every step's pod shares: image, environment, the specs ConfigMap, a scratch home."""
    return {
        "constructor": "runner",
        "image": settings.image,
        "env_from": [ConfigMapEnvFrom(name="ctloop-config"),
                     ConfigMapEnvFrom(name="ctloop-kafka")],
        "env": [
            Env(name="HOME", value="/tmp"),
            # the snapshot step names this image for the train step when the spec pins none of its own
            Env(name="CTLOOP_IMAGE", value=settings.image),
            SecretEnv(name="AWS_ACCESS_KEY_ID", secret_name=S3_SECRET, secret_key=S3_ACCESS_KEY),
            SecretEnv(name="AWS_SECRET_ACCESS_KEY", secret_name=S3_SECRET, secret_key=S3_SECRET_KEY),
        ],
        "volumes": [
            EmptyDirVolume(name="home", mount_path=HOME, size_limit="8Gi"),
            ConfigMapVolume(name="ctloop-specs", mount_path=f"{HOME}/specs", read_only=True),
        ],
        "retry_strategy": transient_retry(),
    }


def _train_resources(settings: Settings) -> Resources:
    if settings.gpu.gpus > 0:
        return Resources(cpu_request=2, memory_request="8Gi", memory_limit="16Gi", gpus=settings.gpu.gpus)
    return Resources(cpu_request=2, memory_request="4Gi", memory_limit="8Gi")


def retrain_template(settings: Settings) -> WorkflowTemplate:
    """The WorkflowTemplate for these settings (image, GPU request, S3 endpoint, service account)."""
    pod = _pod(settings)
    small = Resources(cpu_request="250m", memory_request="512Mi", memory_limit="2Gi")
    medium = Resources(cpu_request="500m", memory_request="1Gi", memory_limit="4Gi")
    snapshot = script(**pod, resources=small, outputs=[_s3("snapshot", settings)])(steps.snapshot)
    validate = script(**pod, resources=medium)(steps.validate)
    train = script(
        **{**pod, "image": "{{inputs.parameters.image}}"},  # the spec's image (digest-pinned), else the default
        pod_spec_patch="{{inputs.parameters.pod-patch}}",  # the spec's resources, when it names any
        resources=_train_resources(settings),
        node_selector=dict(settings.gpu.node_selector) or None,
        tolerations=[models.Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
                     for t in settings.gpu.tolerations] or None,
        active_deadline_seconds=TRAIN_DEADLINE_S,
        memoize=models.Memoize(
            key="train-{{inputs.parameters.train-key}}",
            max_age=TRAIN_CACHE_MAX_AGE,
            cache=models.Cache(config_map=models.LocalObjectReference(name=TRAIN_CACHE)),
        ),
    )(steps.train)
    evaluate = script(**pod, resources=medium, outputs=[_s3("evaluation", settings)])(steps.evaluate)
    promote = script(
        **pod,
        resources=small,
        synchronization=models.Synchronization(mutexes=[models.Mutex(name="ctloop-promote-{{inputs.parameters.model}}")]),
    )(steps.promote)
    register = script(**pod, resources=small)(steps.register)
    run_finished = script(**pod, resources=small)(steps.run_finished)

    wf = "{{workflow.parameters.%s}}"
    with WorkflowTemplate(
        name=TEMPLATE_NAME,
        entrypoint="retrain",
        on_exit="finished",
        service_account_name=settings.argo.service_account,
        active_deadline_seconds=WORKFLOW_DEADLINE_S,
        # Workflow-level, so the LocalEngine (which caps runs in admission instead) does not interpret it.
        synchronization=models.Synchronization(semaphores=[models.SemaphoreRef(
            config_map_key_ref=models.ConfigMapKeySelector(name=SYNC_CONFIGMAP, key=SYNC_KEY))]),
        pod_gc=models.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=models.TTLStrategy(seconds_after_completion=KEEP_FINISHED_S),
        labels={"app.kubernetes.io/part-of": "ctloop", "app.kubernetes.io/component": "retrain"},
        arguments=[
            Parameter(name="model", description="model name (its spec is <home>/specs/<model>.json)"),
            Parameter(name="data-uri", description="file://, s3:// object or prefix with the training data"),
            Parameter(name="event-id", value="", description="id of the triggering CloudEvent"),
            Parameter(name="trigger", value="manual",
                      description="what started the run: manual, data, drift, schedule"),
            Parameter(name="data-digest", value="", description="digest the trigger reported, if any"),
            Parameter(name="idempotency-key", description="model + data digest + code version + params"),
            Parameter(name="code-version", value=settings.image, description="version of the code in the image"),
            Parameter(name="params", value="{}", description="training-parameter overrides, a JSON object"),
        ],
    ) as template:
        with DAG(name="retrain"):
            pinned = snapshot(name="snapshot", arguments={
                "model": wf % "model", "data-uri": wf % "data-uri", "code-version": wf % "code-version",
                "params": wf % "params"})
            checked = validate(name="validate", depends="snapshot", arguments=[
                Parameter(name="model", value=wf % "model"), pinned.get_artifact("snapshot")])
            trained = train(name="train", depends=checked.name, arguments=[
                Parameter(name="model", value=wf % "model"), pinned.get_artifact("snapshot"),
                Parameter(name="train-key", value="{{tasks.snapshot.outputs.parameters.train-key}}"),
                Parameter(name="event-id", value=wf % "event-id"), Parameter(name="params", value=wf % "params"),
                Parameter(name="image", value="{{tasks.snapshot.outputs.parameters.train-image}}"),
                Parameter(name="pod-patch", value="{{tasks.snapshot.outputs.parameters.train-pod-patch}}")])
            scored = evaluate(name="evaluate", depends=trained.name, arguments=[
                Parameter(name="model", value=wf % "model"), pinned.get_artifact("snapshot"),
                Parameter(name="model-uri", value="{{tasks.train.outputs.parameters.model-uri}}")])
            decision = [
                Parameter(name="model", value=wf % "model"),
                Parameter(name="model-uri", value="{{tasks.train.outputs.parameters.model-uri}}"),
                scored.get_artifact("evaluation"),
                Parameter(name="run-id", value="{{tasks.train.outputs.parameters.run-id}}"),
                Parameter(name="data-digest", value="{{tasks.train.outputs.parameters.data-digest}}"),
                Parameter(name="event-id", value=wf % "event-id"),
                Parameter(name="code-version", value=wf % "code-version"),
                Parameter(name="trainer-version", value="{{tasks.train.outputs.parameters.trainer-version}}"),
                Parameter(name="reasons", value="{{tasks.evaluate.outputs.parameters.reasons}}"),
            ]
            promote(name="promote", depends=scored.name, arguments=decision,
                    when="{{tasks.evaluate.outputs.parameters.promote}} == true")
            register(name="register", depends=scored.name, arguments=decision,
                     when="{{tasks.evaluate.outputs.parameters.promote}} == false")
        with DAG(name="finished"):
            run_finished(name="run-finished", arguments={
                "run-id": "{{workflow.name}}", "model": wf % "model", "status": "{{workflow.status}}",
                "idempotency-key": wf % "idempotency-key", "event-id": wf % "event-id",
                "failures": "{{workflow.failures}}"})
    return template
