"""How the demo tells its progress: rich lines and spinners on a terminal, or nothing at all."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

from rich.console import Console


class Narrator(Protocol):
    def stage(self, number: int, title: str) -> None: ...

    def say(self, text: str) -> None: ...

    def waiting(self, text: str) -> AbstractContextManager[None]: ...


class Silent:
    """For --quiet and --json: the summary (or its JSON) is the only output."""

    def stage(self, number: int, title: str) -> None:
        pass

    def say(self, text: str) -> None:
        pass

    def waiting(self, text: str) -> AbstractContextManager[None]:
        return nullcontext()


class RichNarrator:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)

    def stage(self, number: int, title: str) -> None:
        self.console.rule(f"[bold]{number}. {title}", align="left")

    def say(self, text: str) -> None:
        self.console.print(f"  {text}")

    @contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        with self.console.status(f"  {text}", spinner="dots"):
            yield
