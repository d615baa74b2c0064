"""A step run in its own process: `python -m workflows.step_process REQUEST.json RESULT.json`.

The local engine uses it when steps should not share its interpreter (isolation, hard timeouts).
The exit code is the step's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ctloop.settings import Settings
from ctloop.workflows.local.invoke import StepFailed, call
from ctloop.workflows.step_context import use_settings


def main(request_path: str, result_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    with use_settings(Settings(**request["settings"])):
        try:
            outputs = call(request["entrypoint"], request["parameters"], request["artifacts"],
                           Path(request["out_dir"]))
        except StepFailed as exc:
            Path(result_path).write_text(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
            return exc.exit_code
    Path(result_path).write_text(json.dumps({"parameters": outputs.parameters, "artifacts": outputs.artifacts}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
