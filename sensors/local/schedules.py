"""What each model's schedule is, when it ticks next, and what its last ticks decided: for the CLI."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ctloop.modelspec import ModelSpec, load_specs, specs_dir
from ctloop.sensors.catalog import SCHEDULE_PREFIX, schedule_slug
from ctloop.sensors.local.calendar import TICK_PREFIX, TickRecord, tick_records
from ctloop.sensors.local.decisions import DecisionRow, list_decisions
from ctloop.settings import Settings


def _iso(when: datetime | float | None) -> str:
    if when is None:
        return "-"
    if isinstance(when, float | int):
        when = datetime.fromtimestamp(when, UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ScheduleView:
    model: str
    schedule: str
    data_uri: str
    next_tick: datetime | None
    record: TickRecord | None
    recent: tuple[DecisionRow, ...]  # newest first

    def as_json(self) -> dict[str, Any]:
        record = self.record
        return {
            "model": self.model, "schedule": self.schedule, "data_uri": self.data_uri,
            "next_tick": _iso(self.next_tick),
            "last_tick": _iso(record.last_tick) if record and record.fired else None,
            "missed_before_last": record.missed if record and record.fired else 0,
            "recent": [asdict(row) for row in self.recent],
        }

    def lines(self) -> list[str]:
        record = self.record
        if record is None:
            last = "no tick yet (the sensor arms the schedule when it starts)"
        elif not record.fired:
            last = f"no tick yet (armed {_iso(record.last_tick)})"
        else:
            caught = f", caught up once for {record.missed + 1} due ticks" if record.missed else ""
            last = f"last tick {_iso(record.last_tick)}{caught}"
        out = [f"schedule {self.model}: {self.schedule} on {self.data_uri}",
               f"  next tick {_iso(self.next_tick)}; {last}"]
        out += [f"  {_iso(r.at)} {r.event_id.split('@', 1)[-1]} {r.kind:<9} {r.reason}" for r in self.recent]
        return out


def schedule_views(settings: Settings, *, model: str | None = None, now: datetime | None = None,
                   recent: int = 3, models: tuple[ModelSpec, ...] | None = None) -> list[ScheduleView]:
    """One view per scheduled model in `<home>/specs` (or `models`), optionally only `model`."""
    now = now or datetime.now(UTC)
    models = load_specs(specs_dir(settings)) if models is None else models
    records = tick_records(settings.state_db)
    views = []
    for spec in models:
        if spec.schedule is None or spec.schedule_uri is None or (model and spec.name != model):
            continue
        rows = list_decisions(settings.state_db, event_prefix=f"{TICK_PREFIX}{spec.name}@", limit=recent)
        views.append(ScheduleView(spec.name, spec.schedule.description, spec.schedule_uri,
                                  spec.schedule.next_tick(now),
                                  records.get(f"{SCHEDULE_PREFIX}{schedule_slug(spec.name)}"), tuple(rows)))
    return views
