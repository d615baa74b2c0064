"""Trigger parameters resolved locally: the same sources the rendered `dataKey`/`dataTemplate`s read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sensors.eventdata import PathMissing, as_text, lookup
from sensors.spec import Concat, Const, Context, KeyOf, ParamSource, Path, Prefixed, Segment, SensorSpec
from workflows.engine import idempotency_key


class MappingError(ValueError):
    """A parameter that cannot be resolved from the event; the message names it."""


def resolve(source: ParamSource, data: Any, context: Mapping[str, str]) -> str:
    if isinstance(source, Const):
        return source.value
    if isinstance(source, Path):
        return as_text(lookup(data, source.path))
    if isinstance(source, Context):
        return context[source.key]
    if isinstance(source, Concat):
        return "".join(resolve(p, data, context) for p in source.parts)
    if isinstance(source, Segment):
        parts = resolve(source.of, data, context).split("/")
        if source.index >= len(parts):
            raise MappingError(f"{source.of.path} has no segment {source.index}")
        return parts[source.index]
    if isinstance(source, KeyOf):
        try:
            digest = as_text(lookup(data, source.digest.path))
        except PathMissing:
            digest = ""
        digest = digest or resolve(source.fallback, data, context)
        return idempotency_key(resolve(source.model, data, context), digest, source.code_version)
    if isinstance(source, Prefixed):
        return source.prefix + resolve(source.key, data, context)
    raise MappingError(f"unsupported parameter source {source!r}")


def parameters(spec: SensorSpec, data: Any, context: Mapping[str, str]) -> dict[str, str]:
    """Every parameter of the sensor's trigger, or `MappingError` naming the one that failed."""
    out = {}
    for name, source in spec.params.items():
        try:
            value = resolve(source, data, context)
        except PathMissing as exc:
            raise MappingError(f"parameter {name}: no value at {exc.args[0]}") from None
        if not value:
            raise MappingError(f"parameter {name}: empty")
        out[name] = value
    return out
