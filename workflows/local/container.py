"""Running one step of the WorkflowTemplate in its container image, as its pod would (`step_mode="container"`).

What the template says is what runs: the script's image, command and args (Hera's runner), its literal
environment, its input artifacts mounted at their declared paths, its outputs read back from the files the
template names. What only a cluster has is stood in for by this machine's equivalents: the `ctloop-config`
and `ctloop-kafka` ConfigMaps become the engine's settings as CTLOOP_* variables, a Secret-backed variable
takes the value of the same name in this process's environment (if any), an emptyDir is a fresh directory, a
ConfigMap volume a local directory (the specs ConfigMap: `<home>/specs`). The container shares this machine's
network (so loopback brokers, registries and S3 servers answer at the same addresses) and mounts the settings'
home at the same path (so a SQLite registry, the embedded bus and the file store are the same files; file://
data must live under it too, as a pod's data lives in S3). It runs as the calling user, so what it writes
there stays the caller's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from hera.workflows.models import Template
from pydantic import BaseModel

from ctloop.settings import Settings
from ctloop.workflows.local.invoke import StepFailed, StepOutputs

SCRIPT_PATH = "/argo/staging/script"
"""Where Argo's executor puts a script template's source; Hera's runner reads its inputs from it."""
OUTPUTS_ENV = "hera__outputs_directory"
DEFAULT_OUTPUTS = "/tmp/hera-outputs"
SETTINGS_CONFIG_MAPS = frozenset({"ctloop-config", "ctloop-kafka"})


class ContainerStepError(StepFailed):
    """The template asks for something a local container cannot be given; the step errors, naming it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, -1)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as the CTLOOP_* variables that would produce them (nested models joined with `__`)."""
    env: dict[str, str] = {}

    def add(prefix: str, model: BaseModel, dumped: dict[str, object]) -> None:
        for name, value in dumped.items():
            key = f"{prefix}{name.upper()}"
            nested = getattr(model, name)
            if isinstance(nested, BaseModel):
                add(f"{key}__", nested, value)  # type: ignore[arg-type]
            else:
                env[key] = value if isinstance(value, str) else json.dumps(value)

    add("CTLOOP_", settings, settings.model_dump(mode="json", exclude_none=True))
    env["CTLOOP_HOME"] = str(Path(settings.home).resolve())
    # As k8s/base/config.yaml sets it: MLflow's own clients (a `runs:/` model URI) read no ctloop setting.
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    return env


@dataclass(frozen=True)
class ContainerRunner:
    """Runs a Hera runner script template with `docker run`; one container per attempt."""

    settings: Settings
    docker: str = "docker"
    config_maps: dict[str, Path] = field(default_factory=dict)

    def run(self, template: Template, image: str, parameters: dict[str, str], artifacts: dict[str, str],
            out_dir: Path, timeout: float | None) -> StepOutputs:
        script = template.script
        if script is None or not script.command:
            raise ContainerStepError(f"template {template.name!r} has no script command to run in a container")
        out_dir.mkdir(parents=True, exist_ok=True)
        scratch = out_dir / "container"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        source = scratch / "script.json"
        source.write_text(json.dumps([{"name": k, "value": v} for k, v in parameters.items()]))

        env = self._environment(template)
        outputs_in = PurePosixPath(env.get(OUTPUTS_ENV, DEFAULT_OUTPUTS))
        outputs_out = scratch / "outputs"
        outputs_out.mkdir()
        mounts = [(source, SCRIPT_PATH, "ro"), (outputs_out, str(outputs_in), "rw"), *self._volumes(template, scratch)]
        home = Path(self.settings.home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        mounts.append((home, str(home), "rw"))
        for declared in (template.inputs.artifacts or []) if template.inputs else []:
            if declared.name not in artifacts:
                if declared.optional:
                    continue
                raise ContainerStepError(f"template {template.name!r}: input artifact {declared.name!r} was not given")
            path = declared.path or f"/tmp/hera-inputs/artifacts/{declared.name}"
            mounts.append((Path(artifacts[declared.name]).resolve(), path, "ro"))

        name = f"ctloop-step-{template.name}-{uuid.uuid4().hex[:8]}"
        command = [
            self.docker, "run", "--rm", "--name", name, "--network", "host", "--no-healthcheck",
            "--user", f"{os.getuid()}:{os.getgid()}",
            *(f"--env={k}={v}" for k, v in env.items()),
            *(f"--volume={host}:{inside}:{mode}" for host, inside, mode in mounts),
            *(["--workdir", script.working_dir] if script.working_dir else []),
            "--entrypoint", script.command[0], image, *script.command[1:], *(script.args or []), SCRIPT_PATH,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except OSError as exc:
            raise ContainerStepError(f"cannot run {self.docker!r} for template {template.name!r}: {exc}") from None
        except subprocess.TimeoutExpired:
            subprocess.run([self.docker, "kill", name], capture_output=True, check=False, timeout=60)
            raise StepFailed(f"step exceeded its deadline of {timeout:.3g}s; container {name} was killed", -1) from None
        (scratch / "log.txt").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip())[-1500:]
            raise StepFailed(f"container exited with code {done.returncode}: {tail}", done.returncode)
        return self._outputs(template, outputs_in, outputs_out)

    def _environment(self, template: Template) -> dict[str, str]:
        script = template.script
        env: dict[str, str] = {}
        for source in (script.env_from or []) if script else []:
            config_map = source.config_map_ref.name if source.config_map_ref else None
            if config_map in SETTINGS_CONFIG_MAPS:
                env.update(settings_environment(self.settings))
            elif not (source.config_map_ref and source.config_map_ref.optional):
                raise ContainerStepError(f"template {template.name!r}: envFrom {source} has no local equivalent")
        for var in (script.env or []) if script else []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from is not None and var.value_from.secret_key_ref is not None:
                if var.name in os.environ:
                    env[var.name] = os.environ[var.name]
            else:
                raise ContainerStepError(f"template {template.name!r}: env {var.name!r} has no local equivalent")
        return env

    def _volumes(self, template: Template, scratch: Path) -> list[tuple[Path, str, str]]:
        declared = {v.name: v for v in template.volumes or []}
        mounts = []
        for mount in (template.script.volume_mounts or []) if template.script else []:
            volume = declared.get(mount.name)
            if volume is None:
                raise ContainerStepError(f"template {template.name!r}: volume {mount.name!r} is not declared")
            if volume.empty_dir is not None:
                host = scratch / "volumes" / mount.name
                host.mkdir(parents=True)
            elif volume.config_map is not None and volume.config_map.name in self.config_maps:
                host = self.config_maps[volume.config_map.name]
                host.mkdir(parents=True, exist_ok=True)
            else:
                raise ContainerStepError(f"template {template.name!r}: volume {mount.name!r} has no local equivalent")
            mounts.append((host.resolve(), mount.mount_path, "ro" if mount.read_only else "rw"))
        return mounts

    def _outputs(self, template: Template, inside: PurePosixPath, outside: Path) -> StepOutputs:
        def local(path: str, what: str) -> Path:
            relative = PurePosixPath(path).relative_to(inside) if PurePosixPath(path).is_relative_to(inside) else None
            if relative is None:
                raise ContainerStepError(f"template {template.name!r}: {what} at {path} is outside {inside}")
            return outside / relative

        parameters: dict[str, str] = {}
        artifacts: dict[str, str] = {}
        outputs = template.outputs
        for param in (outputs.parameters or []) if outputs else []:
            if param.value_from is None or param.value_from.path is None:
                continue
            file = local(param.value_from.path, f"output parameter {param.name!r}")
            if not file.is_file():
                raise StepFailed(f"the step wrote no output parameter {param.name!r} ({param.value_from.path})", 1)
            parameters[param.name] = file.read_text()
        for artifact in (outputs.artifacts or []) if outputs else []:
            if artifact.path is None:
                continue
            file = local(artifact.path, f"output artifact {artifact.name!r}")
            if not file.exists():
                if artifact.optional:
                    continue
                raise StepFailed(f"the step wrote no output artifact {artifact.name!r} ({artifact.path})", 1)
            artifacts[artifact.name] = str(file)
        return StepOutputs(parameters, artifacts)
