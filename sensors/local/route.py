"""A sensor spec compiled once into what decides one Kafka event: its filters, the data digest, the trigger's
parameters and the idempotency key, to a `Candidate` or the reason the filters refused it.

Every spec gets the general route (`rejection` and `plan` over the Kafka event data, as `ctloop.sensors.filters`
and `ctloop.sensors.mapping` define them). A spec that reads only the message body, through the sources the
catalog's sensors use (paths, constants, the key of a model and digest, the workflow name), also gets `decide`:
one function per event that finds each path once in the body, without building the event data, and makes the
candidate. Its verdicts, parameters and errors are the general route's, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from ctloop.consume import Unroutable
from ctloop.sensors.admission import Candidate, Trigger, new_candidate
from ctloop.sensors.eventdata import MISSING, PathMissing, as_text, find, go_empty, go_text
from ctloop.sensors.filters import Rejection, compile_rejection, expr_value_check, value_check
from ctloop.sensors.mapping import MappingError, Plan, compile_parameters
from ctloop.sensors.spec import Const, DataFilter, KeyOf, ParamSource, Path, SensorSpec, WorkflowName, check_path
from ctloop.workflows.engine import idempotency_key

TRIGGERS = get_args(Trigger)
# The trigger parameters a `Candidate` is made of; the others (the workflow name) are checked, not made.
CANDIDATE_PARAMS = frozenset({"event-id", "model", "idempotency-key", "data-uri", "trigger"})
GENERAL = object()  # `decide`'s answer for an event only the general route decides (a digest to snapshot)

# `decide(body, event_time, gpu, snapshots)`: the candidate, the filter that refused the event, or `GENERAL`.
Decide = Callable[[Any, float, bool, bool], "Candidate | DataFilter | Any"]


@dataclass(frozen=True)
class Route:
    """A sensor spec with its filters and parameter mapping compiled once."""

    spec: SensorSpec
    rejection: Rejection
    plan: Plan
    digest_path: tuple[str, ...] | None  # where the key reads the data digest (None: the key has no digest)
    decide: Decide | None  # the body-only route, for a spec that has one

    @classmethod
    def of(cls, spec: SensorSpec) -> Route:
        key = spec.params["idempotency-key"]
        digest_path = check_path(key.digest.path) if isinstance(key, KeyOf) else None
        plan = compile_parameters(spec, made=CANDIDATE_PARAMS)
        return cls(spec, compile_rejection(spec.dependency), plan, digest_path, _body_route(spec))

    def parameters(self, data: Any, context: dict[str, str]) -> dict[str, str]:
        """`mapping.parameters` of the spec; `Unroutable` naming the parameter that failed."""
        try:
            return self.plan(data, context)
        except MappingError as exc:
            raise Unroutable(f"{self.spec.name}: {exc}") from None


def _body_route(spec: SensorSpec) -> Decide | None:
    """`Route.decide` for a spec whose filters and parameters read only `body.*` through the catalog's sources;
    None for any other spec."""
    dependency, params = spec.dependency, spec.params
    paths: dict[str, int] = {}  # each path read, once, by its place in the values found per event

    def place(path: str) -> int | None:
        if not path.startswith("body."):
            return None
        return paths.setdefault(path, len(paths))

    trigger, key = params.get("trigger"), params.get("idempotency-key")
    if not (isinstance(trigger, Const) and trigger.value in TRIGGERS and isinstance(key, KeyOf)
            and all(isinstance(params.get(name), Path) for name in ("model", "data-uri", "event-id"))):
        return None
    checks = [(place(f.path), value_check(f), f) for f in dependency.data]
    exprs = [([place(path) for _, path in f.fields], expr_value_check(f), f) for f in dependency.exprs]
    steps = []
    for name, source in params.items():
        step = _step(name, source, key, place)
        if step is None:
            return None
        steps.append((name, step))
    if any(i is None for i, _, _ in checks) or any(None in fields for fields, _, _ in exprs):
        return None
    digest_at = place(key.digest.path)
    found = tuple(tuple(check_path(path)[1:]) for path in paths)  # found in the body: "body." left out
    checked = tuple(checks)
    checked_exprs = tuple((tuple(fields), passes, f) for fields, passes, f in exprs)
    made = {name: n for n, (name, _) in enumerate(steps)}
    at_id, at_model, at_key, at_uri = made["event-id"], made["model"], made["idempotency-key"], made["data-uri"]
    trigger_value, name = trigger.value, spec.name
    steps_in_order = tuple(steps)

    def decide(body: Any, event_time: float, gpu: bool, snapshots: bool) -> Candidate | DataFilter | Any:
        values = [find(body, parts) for parts in found]
        for at, passes, f in checked:
            if not passes(values[at]):
                return f
        for fields, passes, f in checked_exprs:
            if not passes([values[at] for at in fields]):
                return f
        digest = values[digest_at]
        if digest is MISSING or not digest:
            if snapshots:
                return GENERAL  # snapshotted, and written into the event data, by the general route
            digest = ""
        memo: list[str] = []
        out = []
        for param, step in steps_in_order:
            try:
                value = step(values, memo)
            except PathMissing as exc:
                raise Unroutable(f"{name}: parameter {param}: no value at {exc.args[0]}") from None
            except MappingError as exc:
                raise Unroutable(f"{name}: {exc}") from None
            if not value:
                raise Unroutable(f"{name}: parameter {param}: empty")
            out.append(value)
        return new_candidate(event_id=out[at_id], model=out[at_model], key=out[at_key], uri=out[at_uri],
                             digest=str(digest), trigger=trigger_value, gpu=gpu, event_time=event_time)

    return decide


_Step = Callable[[list[Any], list[str]], str]


def _step(name: str, source: ParamSource, key: KeyOf, place: Callable[[str], int | None]) -> _Step | None:
    """One parameter read from the values found (`mapping._step`'s value), or None for a source not compiled
    here; `memo` holds the key once made."""
    if isinstance(source, Path):
        at, path = place(source.path), source.path
        if at is None:
            return None

        def text(values: list[Any], memo: list[str]) -> str:
            value = values[at]
            if value is MISSING:
                raise PathMissing(path)
            return value if type(value) is str else as_text(value)

        return text
    if isinstance(source, Const):
        value = source.value
        return lambda values, memo: value
    if source is key:
        return _key_step(key, place)
    if isinstance(source, WorkflowName) and source.key is key and isinstance(source.model, Path) \
            and name not in CANDIDATE_PARAMS:
        # Checked, not made (as `mapping._checked`): its model a string, then its key.
        at, path, key_step = place(source.model.path), source.model.path, _key_step(key, place)
        if at is None or key_step is None:
            return None

        def checked(values: list[Any], memo: list[str]) -> str:
            model = values[at]
            if model is MISSING:
                raise PathMissing(path)
            if not isinstance(model, str):
                raise MappingError(f"{path} is not a string")
            return key_step(values, memo)

        return checked
    return None


def _key_step(key: KeyOf, place: Callable[[str], int | None]) -> _Step | None:
    """`mapping._key_step` over the values found: made once per event however many parameters use it."""
    if not isinstance(key.model, Path) or not isinstance(key.fallback, Path | Const):
        return None
    digest_at, model_at, model_path = place(key.digest.path), place(key.model.path), key.model.path
    fallback = _go_text(key.fallback, place)
    if digest_at is None or model_at is None or fallback is None:
        return None
    version_of = key.version_of

    def made(values: list[Any], memo: list[str]) -> str:
        if memo:
            return memo[0]
        digest = values[digest_at]
        # sprig's `default`: a null, "", 0 or false digest takes the fallback.
        text = fallback(values) if digest is MISSING or go_empty(digest) else go_text(digest)
        model = values[model_at]
        if model is MISSING:
            raise PathMissing(model_path)
        if type(model) is not str:
            model = go_text(model)
        memo.append(idempotency_key(model, text, version_of(model)))
        return memo[0]

    return made


def _go_text(source: Path | Const, place: Callable[[str], int | None]) -> Callable[[list[Any]], str] | None:
    """`mapping._text` over the values found: Go's `%v` of a path's value, or a constant."""
    if isinstance(source, Const):
        value = source.value
        return lambda values: value
    at, path = place(source.path), source.path
    if at is None:
        return None

    def text(values: list[Any]) -> str:
        value = values[at]
        if value is MISSING:
            raise PathMissing(path)
        return value if type(value) is str else go_text(value)

    return text


def context_of(brief: Any) -> Mapping[str, str]:
    """The event's attributes a `Context` source reads."""
    return {"id": brief.id, "type": brief.type, "source": brief.source, "subject": brief.subject or ""}
