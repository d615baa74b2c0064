"""Watching a model's aliases from outside while something moves them."""

from __future__ import annotations

import threading
import time

from ctloop.deploy.registry import Registry


class AliasWatcher(threading.Thread):
    """Reads the aliases through the other server (same backend) until stopped; keeps every distinct view."""

    def __init__(self, registry: Registry, model: str) -> None:
        super().__init__(daemon=True)
        self.registry, self.model = registry, model
        self.views: list[dict[str, str]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            view = self.registry.aliases(self.model)
            if not self.views or self.views[-1] != view:
                self.views.append(view)
            time.sleep(0.02)

    def stop(self) -> list[dict[str, str]]:
        self._done.set()
        self.join(timeout=30)
        return self.views
