"""Calling a step's Python function the way Hera's runner does in a pod, with local files for artifacts.

Inputs are matched to the function's parameters by their `Parameter`/`Artifact` annotations (or
their names), parsed to the annotated type; an input artifact is given as the path of a local
file. The function's `Output` fields become output parameters (serialized as Hera does) and output
artifacts (written to files under `out_dir`).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hera.shared._type_util import get_workflow_annotation, origin_type_issubtype, unwrap_annotation
from hera.shared.serialization import serialize
from hera.workflows import Artifact, Parameter
from hera.workflows.io import Output
from pydantic import TypeAdapter


class StepFailed(RuntimeError):
    """A step function ended with a non-zero exit code (an exception is exit code 1)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class StepOutputs:
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


def resolve(entrypoint: str) -> Callable[..., Any]:
    """`package.module:function`, as written in the template's runner args."""
    module, _, name = entrypoint.partition(":")
    function = getattr(importlib.import_module(module), name)
    return getattr(function, "wrapped_function", function)


def call(entrypoint: str, parameters: dict[str, str], artifacts: dict[str, str], out_dir: Path) -> StepOutputs:
    """Run the step function; raises StepFailed with its exit code on any failure."""
    function = resolve(entrypoint)
    kwargs = _kwargs(function, parameters, artifacts)
    try:
        result = function(**kwargs)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise StepFailed(f"exited with code {code}" + (f": {exc.__cause__}" if exc.__cause__ else ""), code) from exc
    except Exception as exc:
        raise StepFailed(f"{type(exc).__name__}: {exc}", 1) from exc
    outputs = _outputs(result, out_dir)
    if isinstance(result, Output) and result.exit_code:
        raise StepFailed(f"exited with code {result.exit_code}: {result.result}", result.exit_code)
    return outputs


def _kwargs(function: Callable[..., Any], parameters: dict[str, str], artifacts: dict[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(function).parameters.items():
        annotation = get_workflow_annotation(param.annotation)
        if isinstance(annotation, Artifact):
            key = annotation.name or name
            if key in artifacts:
                kwargs[name] = artifacts[key]
            elif not annotation.optional:
                raise StepFailed(f"input artifact {key!r} was not given")
            continue
        key = annotation.name if isinstance(annotation, Parameter) and annotation.name else name
        if key not in parameters:
            if param.default is not inspect.Parameter.empty:
                continue
            raise StepFailed(f"input parameter {key!r} was not given")
        kwargs[name] = _parse(parameters[key], param.annotation)
    return kwargs


def _parse(value: str, annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty or origin_type_issubtype(annotation, (str, type(None))):
        return value
    try:
        return TypeAdapter(unwrap_annotation(annotation)).validate_python(json.loads(value))
    except ValueError as exc:
        raise StepFailed(f"input {value!r} does not parse as {unwrap_annotation(annotation)}: {exc}") from None


def _outputs(result: Any, out_dir: Path) -> StepOutputs:
    if not isinstance(result, Output):
        return StepOutputs()
    parameters: dict[str, str] = {}
    artifacts: dict[str, str] = {}
    for name in type(result).model_fields:
        if name in ("exit_code", "result"):
            continue
        target = result._get_output(name)
        text = serialize(getattr(result, name))
        if isinstance(target, Artifact):
            path = out_dir / (target.name or name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text or "")
            artifacts[target.name or name] = str(path)
        else:
            parameters[target.name or name] = text or ""
    return StepOutputs(parameters, artifacts)
