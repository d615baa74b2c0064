"""Runs one LocalEngine submission in its own process, for crash and concurrency tests.

    python -m tests.workflows.engine_process HOME TEMPLATE KEY LOG
prints `ran <status>` or `refused`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ctloop.settings import Settings
from ctloop.workflows.engine import AlreadyRan
from ctloop.workflows.local.engine import LocalEngine
from tests.workflows import toy_templates


def main(home: str, template: str, key: str, log: str) -> None:
    engine = LocalEngine(Settings(home=Path(home)), template=getattr(toy_templates, template)())
    try:
        handle = engine.start({"log": log}, key=key)
    except AlreadyRan:
        print("refused", flush=True)
        return
    print(f"ran {handle.status}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
