"""How a long-running ctloop process stops: SIGTERM or SIGINT ends its loop between steps, then it closes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def until_signalled(run: Callable[[Callable[[], bool]], None], close: Callable[[], None]) -> None:
    """Call `run(should_stop)` until SIGTERM or SIGINT asks it to stop, then `close()`, even on an error. The
    signal only sets a flag, so the step in hand (a batch being decided) finishes and is committed first."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        run(stop.is_set)
    finally:
        close()
