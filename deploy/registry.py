"""A thin typed layer over the MLflow model registry: versions, provenance tags, aliases, retries.

Only aliases (`champion`, `challenger`, `previous`) mark a version's role; stages are deprecated.
Every call goes through one bounded retry loop with exponential backoff, so a registry that is down
or slow costs at most `Retry.budget_s()` per call before `RegistryUnavailable` is raised.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ctloop.failures import REGISTRY_FIX, Failure, Refused, Unreachable
from ctloop.mlflow_http import bound_mlflow_http, brief
from ctloop.transient import TransientError, is_transient_call

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
ROLE_ALIASES = (CHAMPION, PREVIOUS, CHALLENGER)

TAG_PREFIX = "ctloop."
AUDIT_PREFIX = "ctloop.audit."
DECISION_TAG = "ctloop.decision"
REASONS_TAG = "ctloop.reasons"
METRIC_PREFIX = "ctloop.metric."
HOLDOUT_TAG = "ctloop.holdout_digest"
# What a version was made from, each a tag `ctloop.<key>`: the triggering event, the data snapshot, code, run.
PROVENANCE_KEYS = ("event_id", "data_digest", "code_version", "run_id")
_REGISTRATION_TAG = "ctloop.registration_id"
# MLflow's limit on a tag value is 5000 characters; longer reasons are cut, not rejected.
_MAX_TAG_VALUE = 5000

T = TypeVar("T")


class RegistryError(RuntimeError, Failure):
    """A registry operation that cannot be done; the message says which and why."""


class RegistryUnavailable(RegistryError, Unreachable, TransientError):
    """The registry did not answer within the retry budget."""

    fix = REGISTRY_FIX


class NotFound(RegistryError, Refused):
    pass


@dataclass(frozen=True)
class Retry:
    attempts: int = 5
    base_delay_s: float = 0.25
    max_delay_s: float = 4.0
    timeout_s: int = 10

    def delays(self) -> list[float]:
        return [min(self.max_delay_s, self.base_delay_s * 2**i) for i in range(self.attempts - 1)]


@dataclass(frozen=True)
class VersionInfo:
    model: str
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_ms: int | None

    @property
    def decision(self) -> str | None:
        return self.tags.get(DECISION_TAG)

    @property
    def metrics(self) -> dict[str, float]:
        return {k.removeprefix(METRIC_PREFIX): float(v) for k, v in self.tags.items() if k.startswith(METRIC_PREFIX)}

    @property
    def reasons(self) -> list[str]:
        raw = self.tags.get(REASONS_TAG)
        return json.loads(raw) if raw else []

    @property
    def provenance(self) -> dict[str, str | None]:
        return {key: self.tags.get(f"{TAG_PREFIX}{key}") for key in PROVENANCE_KEYS}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    aliases: dict[str, str]
    tags: dict[str, str]

    @property
    def audit(self) -> list[dict[str, Any]]:
        """The audit trail, oldest first (keys sort by time)."""
        return [json.loads(self.tags[k]) for k in sorted(self.tags) if k.startswith(AUDIT_PREFIX)]


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


class Registry:
    def __init__(self, tracking_uri: str, *, retry: Retry | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.retry = retry or Retry()
        bound_mlflow_http(self.retry.timeout_s)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delays = self.retry.delays()
        for attempt in range(self.retry.attempts):
            try:
                return fn()
            except Exception as exc:
                if not is_transient_call(exc):
                    raise
                if attempt == len(delays):
                    raise RegistryUnavailable(
                        f"registry {self.tracking_uri} unavailable: {what} failed {self.retry.attempts} times;"
                        f" last error: {brief(exc)}"
                    ) from exc
                time.sleep(delays[attempt])
        raise AssertionError("unreachable")

    # models

    def ensure_model(self, name: str) -> None:
        def create() -> None:
            try:
                self.client.create_registered_model(name)
            except Exception as exc:
                if _error_code(exc) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise

        self._call(f"create model {name}", create)

    def model(self, name: str) -> ModelInfo:
        def get() -> ModelInfo:
            try:
                rm = self.client.get_registered_model(name)
            except Exception as exc:
                if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                    raise NotFound(f"no registered model {name!r}") from None
                raise
            return _model_info(rm)

        return self._call(f"get model {name}", get)

    def models(self) -> list[ModelInfo]:
        def search() -> list[ModelInfo]:
            out, token = [], None
            while True:
                page = self.client.search_registered_models(max_results=200, page_token=token)
                out += [_model_info(rm) for rm in page]
                token = page.token
                if not token:
                    return out

        return self._call("list models", search)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._call(f"tag model {name}", lambda: self.client.set_registered_model_tag(name, key, value))

    def delete_model_tag(self, name: str, key: str) -> None:
        def delete() -> None:
            try:
                self.client.delete_registered_model_tag(name, key)
            except Exception as exc:
                if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    raise

        self._call(f"untag model {name}", delete)

    # versions

    def resolve(self, model_uri: str) -> tuple[str, str | None, str | None]:
        """(source, logged model id, run id) to register `model_uri` with. MLflow 3 keeps a model's
        files under its logged model, so `runs:/RUN/NAME` is resolved to `models:/<model id>`."""
        from mlflow.store.artifact.utils.models import _parse_model_id_if_present

        model_id = _parse_model_id_if_present(model_uri)
        if model_id:
            logged = self._call(f"get logged model {model_id}", lambda: self.client.get_logged_model(model_id))
            return model_uri, model_id, logged.source_run_id
        if model_uri.startswith("runs:/"):
            run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
            run = self._call(f"get run {run_id}", lambda: self.client.get_run(run_id))
            found = self._call(f"find logged model {path} of run {run_id}", lambda: self.client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{path.strip('/')}'",
                order_by=[{"field_name": "creation_time", "ascending": False}],
            ))
            if found:
                return f"models:/{found[0].model_id}", found[0].model_id, run_id
            return model_uri, None, run_id
        return model_uri, None, None

    def create_version(self, name: str, model_uri: str, *, run_id: str | None, tags: dict[str, str],
                       registration_id: str | None = None) -> VersionInfo:
        """Register `model_uri` as a new version. A retry after a lost response finds the version it
        created (by a registration id tag) instead of creating a second one; so does a later call with
        the same `registration_id` (a step run again after its process died)."""
        self.ensure_model(name)
        source, model_id, source_run = self.resolve(model_uri)
        run_id = run_id or source_run
        registration = registration_id or uuid.uuid4().hex
        all_tags = {**{k: _clip(v) for k, v in tags.items()}, _REGISTRATION_TAG: registration}
        if run_id:
            all_tags.setdefault("ctloop.run_id", run_id)

        def create() -> VersionInfo:
            existing = self._registered(name, registration)
            if existing:
                return existing[0]
            mv = self.client.create_model_version(
                name, source, run_id=run_id, tags=all_tags, model_id=model_id, await_creation_for=0
            )
            return self._info(mv)

        return self._call(f"register {model_uri} as {name}", create)

    def registered(self, name: str, registration_id: str) -> list[VersionInfo]:
        """The versions registered under `registration_id`, oldest first: one, unless a create landed late."""
        return self._call(f"find {name} versions of registration {registration_id}",
                          lambda: self._registered(name, registration_id))

    def _registered(self, name: str, registration: str) -> list[VersionInfo]:
        found = self.client.search_model_versions(f"name='{name}' and tags.`{_REGISTRATION_TAG}`='{registration}'")
        return sorted((self._info(mv) for mv in found), key=lambda v: int(v.version))

    def delete_version(self, name: str, version: str) -> None:
        def delete() -> None:
            try:
                self.client.delete_model_version(name, str(version))
            except Exception as exc:
                if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    raise

        self._call(f"delete {name} version {version}", delete)

    def version(self, name: str, version: str) -> VersionInfo:
        def get() -> VersionInfo:
            try:
                return self._info(self.client.get_model_version(name, str(version)))
            except Exception as exc:
                if _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise NotFound(f"model {name!r} has no version {version!r}") from None
                raise

        return self._call(f"get {name} version {version}", get)

    def versions(self, name: str) -> list[VersionInfo]:
        def search() -> list[VersionInfo]:
            out, token = [], None
            while True:
                page = self.client.search_model_versions(f"name='{name}'", max_results=200, page_token=token)
                out += [self._info(mv) for mv in page]
                token = page.token
                if not token:
                    return sorted(out, key=lambda v: int(v.version))

        return self._call(f"list versions of {name}", search)

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._call(
                f"tag {name} version {version}",
                lambda k=key, v=value: self.client.set_model_version_tag(name, str(version), k, _clip(v)),
            )

    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            model=mv.name,
            version=str(mv.version),
            source=mv.source,
            run_id=mv.run_id or None,
            tags=dict(mv.tags or {}),
            aliases=tuple(mv.aliases or ()),
            created_ms=mv.creation_timestamp,
        )

    # aliases

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version for the model (empty when the model does not exist)."""
        try:
            return self.model(name).aliases
        except NotFound:
            return {}

    def alias(self, name: str, alias: str) -> str | None:
        return self.aliases(name).get(alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            f"set {name}@{alias}={version}", lambda: self.client.set_registered_model_alias(name, alias, str(version))
        )

    def delete_alias(self, name: str, alias: str) -> None:
        def delete() -> None:
            try:
                self.client.delete_registered_model_alias(name, alias)
            except Exception as exc:
                if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    raise

        self._call(f"delete {name}@{alias}", delete)

    def restore_aliases(self, name: str, aliases: dict[str, str | None]) -> None:
        """Put each alias back to the given version, or remove it where the value is None."""
        for alias, version in aliases.items():
            if version is None:
                self.delete_alias(name, alias)
            else:
                self.set_alias(name, alias, version)


def _model_info(rm: Any) -> ModelInfo:
    # The SQL store answers alias versions as ints, the REST store as strings.
    aliases = {alias: str(version) for alias, version in (rm.aliases or {}).items()}
    return ModelInfo(rm.name, aliases, dict(rm.tags or {}))


def _clip(value: str) -> str:
    return value if len(value) <= _MAX_TAG_VALUE else value[: _MAX_TAG_VALUE - 3] + "..."
