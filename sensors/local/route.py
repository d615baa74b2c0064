"""A sensor spec compiled once into what decides one Kafka event: its filters, the data digest, the trigger's
parameters and the idempotency key, to a `Candidate` or the reason the filters refused it.

Every spec gets the general route (`rejection` and `plan` over the Kafka event data, as `ctloop.sensors.filters`
and `ctloop.sensors.mapping` define them). A spec shaped as the catalog's Kafka sensors are (`CATALOG_PARAMS`)
that reads only the message body also gets `decide`: one function per event that finds each path once in the
body, without building the event data, and makes the candidate, its key hashed once. Its verdicts, parameters and
errors are the general route's, in the same order (`tests/sensors/test_route.py` holds the two equal)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from ctloop.consume import Unroutable
from ctloop.sensors.admission import TRIGGERS, Candidate, new_candidate
from ctloop.sensors.eventdata import MISSING, as_text, find, go_empty, go_text
from ctloop.sensors.filters import Rejection, compile_rejection, expr_value_check, value_check
from ctloop.sensors.mapping import MappingError, Plan, compile_parameters
from ctloop.sensors.spec import Const, DataFilter, ExprFilter, KeyOf, Path, SensorSpec, WorkflowName, check_path
from ctloop.sensors.versions import LiveVersions
from ctloop.workflows.engine import idempotency_key

# The trigger parameters a `Candidate` is made of; the others (the workflow name) are checked, not made.
CANDIDATE_PARAMS = frozenset({"event-id", "model", "idempotency-key", "data-uri", "trigger"})
ONE_LINE = "^.+$"  # a string filter's "has a value on one line", the catalog's `ANY`
PASSED_BOUND = 4096  # sets of filtered strings a route remembers as passing; forgotten all at once when full
GENERAL = object()  # `decide`'s answer for an event only the general route decides (a digest to snapshot)

# `decide(body, event_time, gpu, snapshots)`: the candidate, the filter that refused the event, or `GENERAL`.
Decide = Callable[[Any, float, bool, bool], "Candidate | DataFilter | ExprFilter | Any"]


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


# The catalog's trigger parameters, in the order they are resolved (which decides the error an event gets).
CATALOG_PARAMS = ("model", "data-uri", "event-id", "trigger", "idempotency-key", "workflow-name")


def _body_route(spec: SensorSpec) -> Decide | None:
    """`Route.decide` for a spec shaped as the catalog's Kafka sensors are (`CATALOG_PARAMS`: paths, a trigger,
    the key of a model, a digest and a fallback, the workflow name of that key) whose filters and parameters
    read only `body.*`; None for any other spec."""
    params, name = spec.params, spec.name
    model, uri, event_id, trigger, key, workflow = (params.get(p) for p in CATALOG_PARAMS)
    if not (tuple(params) == CATALOG_PARAMS and isinstance(trigger, Const) and trigger.value in TRIGGERS
            and isinstance(key, KeyOf) and isinstance(key.model, Path) and isinstance(key.fallback, Path)
            and isinstance(workflow, WorkflowName) and workflow.key is key and isinstance(workflow.model, Path)
            and all(isinstance(p, Path) for p in (model, uri, event_id))):
        return None
    dependency = spec.dependency
    read = [f.path for f in dependency.data] + [path for f in dependency.exprs for _, path in f.fields] + [
        p.path for p in (model, uri, event_id, key.digest, key.fallback, key.model, workflow.model)]
    if not all(path.startswith("body.") for path in read):
        return None
    places, fetch = _fetcher({path: check_path(path)[1:] for path in read})  # in the body: "body." left out
    checks = tuple((places[f.path], value_check(f), f) for f in dependency.data)
    exprs = tuple((tuple(places[path] for _, path in f.fields), expr_value_check(f), f) for f in dependency.exprs)
    at_model, at_uri, at_id = places[model.path], places[uri.path], places[event_id.path]
    at_digest, at_fallback, at_of = places[key.digest.path], places[key.fallback.path], places[key.model.path]
    at_named = places[workflow.model.path]
    made_trigger = trigger.value
    # `key.version_of`, without a call an event for a model with no version of its own (most of them).
    versions, code_version, own = key.model_versions, key.code_version, _own_versions(key.model_versions)

    def missing(param: str, path: str) -> Unroutable:
        return Unroutable(f"{name}: parameter {param}: no value at {path}")

    def text(param: str, path: str, value: Any) -> str:
        """A `dataKey`'s text of a parameter's value (`mapping.resolve` of a `Path`), never empty."""
        if value is MISSING:
            raise missing(param, path)
        if type(value) is not str:
            value = as_text(value)
        if not value:
            raise Unroutable(f"{name}: parameter {param}: empty")
        return value

    # The data filters, asked together: those that match a value's text with `.+` (ids and URIs, which rarely
    # repeat) by a look at the string; the rest (the type, the model's name rule: few values, each seen again and
    # again) by one set of the strings they all passed together. Anything else (a value that is not a string, a
    # miss in the set) asks each filter in order, which is what decides.
    one_line = [f.type == "string" and f.comparator == "=" and set(f.values) == {ONE_LINE} for _, _, f in checks]
    anys = tuple(at for (at, _, _), simple in zip(checks, one_line, strict=True) if simple)
    kept = tuple(dict.fromkeys(at for (at, _, _), simple in zip(checks, one_line, strict=True) if not simple))
    remembered = None if not checks else _getter(kept) if kept else lambda values: ()
    passed: set[tuple[Any, ...]] = set()

    def filtered(values: list[Any]) -> DataFilter | None:
        """The first data filter the values fail, asking each in order; None when all pass (remembered)."""
        for at, passes, f in checks:
            if not passes(values[at]):
                return f
        strings = remembered(values)
        if all(type(string) is str for string in strings):
            if len(passed) >= PASSED_BOUND:
                passed.clear()
            passed.add(strings)
        return None

    def decide(body: Any, event_time: float, gpu: bool, snapshots: bool) -> Candidate | DataFilter | ExprFilter | Any:
        values = fetch(body)
        if remembered is not None:
            for at in anys:
                value = values[at]
                if type(value) is not str or not value or "\n" in value:
                    refused = filtered(values)
                    break
            else:
                try:
                    refused = None if remembered(values) in passed else filtered(values)
                except TypeError:  # a value that is not hashable (an object, an array)
                    refused = filtered(values)
            if refused is not None:
                return refused
        for fields, passes, f in exprs:
            if not passes([values[at] for at in fields]):
                return f
        digest = values[at_digest]
        if digest is MISSING or not digest:
            if snapshots:
                return GENERAL  # snapshotted, and written into the event data, by the general route
            digest = ""
        # The parameters in `CATALOG_PARAMS`' order, as `mapping.compile_parameters` resolves them; the usual
        # value, a string that is not empty, taken as it is.
        made_model, made_uri, made_id = values[at_model], values[at_uri], values[at_id]
        if type(made_model) is not str or not made_model:
            made_model = text("model", model.path, made_model)
        if type(made_uri) is not str or not made_uri:
            made_uri = text("data-uri", uri.path, made_uri)
        if type(made_id) is not str or not made_id:
            made_id = text("event-id", event_id.path, made_id)
        # The key (`mapping._key_step`): sprig's `default` takes the fallback for a null, "", 0 or false digest.
        keyed = values[at_digest]
        if type(keyed) is not str or not keyed:  # the usual digest, a string that is not empty, is not `empty`
            if keyed is MISSING or go_empty(keyed):
                keyed = values[at_fallback]
                if keyed is MISSING:
                    raise missing("idempotency-key", key.fallback.path)
            if type(keyed) is not str:
                keyed = go_text(keyed)
        of = values[at_of]
        if of is MISSING:
            raise missing("idempotency-key", key.model.path)
        if type(of) is not str:
            of = go_text(of)
        made_key = idempotency_key(of, keyed, (versions.get(of) if own is None or of in own else None) or code_version)
        # The workflow name is checked, not made (`mapping._checked`): its model must be a string.
        named = values[at_named]
        if named is MISSING:
            raise missing("workflow-name", workflow.model.path)
        if not isinstance(named, str):
            raise Unroutable(f"{name}: {workflow.model.path} is not a string")
        return new_candidate(event_id=made_id, model=made_model, key=made_key, uri=made_uri, digest=str(digest),
                             trigger=made_trigger, gpu=gpu, event_time=event_time)

    return decide


def _own_versions(versions: Mapping[str, str]) -> frozenset[str] | None:
    """The models that have a version of their own in a `LiveVersions` (fixed when it is made; only their
    versions are live, found by a call); None for any other mapping, asked for every model."""
    return frozenset(versions) if isinstance(versions, LiveVersions) else None


def _fetcher(paths: dict[str, tuple[str, ...]]) -> tuple[dict[str, int], Callable[[Any], list[Any]]]:
    """Where each path's value is in the list `fetch(body)` gives: `find` of each (`MISSING` where none is).

    Paths one or two keys deep, the catalog's, are read by `operator.itemgetter`s (C) when the body has them
    all, ~1 µs less an event than a `find` per path; a body that lacks one is read again by `find`."""
    if any(len(parts) > 2 for parts in paths.values()):
        found = tuple(paths.values())
        return {path: n for n, path in enumerate(paths)}, lambda body: [find(body, parts) for parts in found]
    heads = tuple(dict.fromkeys(parts[0] for parts in paths.values()))
    groups = {head: tuple(dict.fromkeys(parts[1] for parts in paths.values() if len(parts) == 2 and parts[0] == head))
              for head in heads}
    # The list's layout: each head's value, then the values under each head that has some.
    layout = [(head,) for head in heads] + [(head, tail) for head in heads for tail in groups[head]]
    places = {path: layout.index(parts) for path, parts in paths.items()}
    slow = tuple(layout)
    top = _getter(heads)
    subs = tuple((heads.index(head), _getter(tails)) for head, tails in groups.items() if tails)

    def fetch(body: Any) -> list[Any]:
        try:
            values = [*top(body)]
            for at, sub in subs:
                values.extend(sub(values[at]))
            return values
        except (KeyError, TypeError):  # a key absent, or an array or scalar on the way: `find` says which
            return [find(body, parts) for parts in slow]

    return places, fetch


def _getter(keys: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """`operator.itemgetter(*keys)`, a tuple however many keys there are."""
    if len(keys) == 1:
        key = keys[0]
        return lambda mapping: (mapping[key],)
    return itemgetter(*keys)
