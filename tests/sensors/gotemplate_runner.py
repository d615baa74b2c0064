"""The Go harness in gotemplate/: built once (cached by source hash under ~/.cache/ctloop/), run as one process.

It resolves a trigger parameter exactly as the Argo Events sensor does (see gotemplate/main.go), so tests
compare `ctloop.sensors.mapping` against real Go text/template + sprig + gjson, not against a re-implementation.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).parent / "gotemplate"
CACHE = Path.home() / ".cache" / "ctloop" / "gotemplate"


class GoBuildFailed(RuntimeError):
    """The harness does not compile; the message carries the compiler's output."""


@dataclass(frozen=True)
class Resolved:
    """What Argo Events would put into the Workflow for one parameter, or why it fails the trigger."""

    ok: bool
    value: str
    error: str = ""


def build(go: str) -> Path:
    """The harness binary for the current sources, compiled on first use and reused across sessions."""
    sources = sorted(p for p in HARNESS.iterdir() if p.suffix in (".go", ".mod", ".sum"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()[:16]
    binary = CACHE / digest / "gotemplate"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"gotemplate.{os.getpid()}")
    done = subprocess.run([go, "build", "-o", str(partial), "."], cwd=HARNESS, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise GoBuildFailed(f"go build in {HARNESS} failed:\n{done.stderr[-2000:]}")
    partial.replace(binary)  # atomic: a concurrent session sees no binary or a whole one
    return binary


class GoResolver:
    """One running harness process; `resolve` sends a case and reads its answer."""

    def __init__(self, binary: Path) -> None:
        self._proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      encoding="utf-8", bufsize=1)
        self.cases = 0

    def resolve(self, src: dict[str, Any], data_json: str) -> Resolved:
        """`src` is a rendered parameter source (`dataTemplate` or `dataKey`); `data_json` the event data."""
        return self._ask({"template": src.get("dataTemplate", ""), "key": src.get("dataKey", ""), "data": data_json})

    def passes(self, filters: dict[str, Any], data_json: str) -> Resolved:
        """Whether the event passes a rendered dependency's `filters` (ok); an error is a refusal too."""
        return self._ask({"filters": filters, "data": data_json})

    def _ask(self, case: dict[str, Any]) -> Resolved:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(case) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Go harness exited with {self._proc.wait()}")
        self.cases += 1
        answer = json.loads(line)
        return Resolved(answer["ok"], answer["value"], answer.get("error", ""))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)
