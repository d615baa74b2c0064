"""The demo's own record in `<home>/demo.json`: which stages are done and which events it published or saw.

It also marks a directory as a demo home, so `--clean` never deletes a directory the demo did not make.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel, Field

JOURNAL = "demo.json"


class EventRecord(BaseModel):
    id: str
    type: str
    topic: str
    stage: str
    detail: str
    at: float = Field(default_factory=time.time)


class Journal(BaseModel):
    model: str
    bus: str
    topic_suffix: str = ""
    """Appended to every topic name on a shared Kafka broker, so a clean run starts on empty topics."""
    done: list[str] = Field(default_factory=list)
    events: list[EventRecord] = Field(default_factory=list)
    alerts: list[dict] = Field(default_factory=list)
    bake_alerts: list[dict] = Field(default_factory=list)
    """Alerts of the bake window's automatic rollback (apart from the drift monitor's)."""
    reports: list[str] = Field(default_factory=list)
    labelled: list[str] = Field(default_factory=list)


def journal_path(home: Path) -> Path:
    return home / JOURNAL


def load_journal(home: Path) -> Journal | None:
    path = journal_path(home)
    return Journal.model_validate_json(path.read_text()) if path.is_file() else None


def save_journal(home: Path, journal: Journal) -> None:
    path = journal_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(journal.model_dump_json(indent=2))
    os.replace(tmp, path)
