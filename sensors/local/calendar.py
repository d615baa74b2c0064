"""Scheduled ticks for the local sensor: the calendar sensors' schedules, fired from the sensor's own loop.

`LocalSensor` asks `due(now)` on every step and offers each tick through the same filters, mapping and
admission control as a consumed event; then `fired` records it. The last tick per sensor is kept in
SQLite (`calendar_ticks`, in the decision log's file), so a restart knows what it missed.

Missed ticks: a sensor that was down while ticks came due fires **one** tick when it is back, for the
newest of them, and records how many earlier ones it skipped. One run on the newest snapshot covers
everything the missed ticks would have seen. A schedule seen for the first time (or changed) starts
counting from now: it never fires for ticks before it existed.

A tick's event id is `schedule:<model>@<instant, UTC>`: firing it again after a crash between the
sensor's record and `fired` is recognised by the sensor as already decided.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ctloop.cron import schedule_ticks
from ctloop.sensors.eventdata import calendar_event_data
from ctloop.sensors.local.jsonlog import log
from ctloop.sensors.spec import CalendarSource, SensorSpec
from ctloop.sqlite import connect

TICK_PREFIX = "schedule:"
# Walking more missed ticks than this to count them is not worth it; the newest is found another way.
_COUNT_LIMIT = 1000
_WINDOWS = (timedelta(days=1), timedelta(days=32), timedelta(days=400), timedelta(days=366 * 8))
_log = logging.getLogger("ctloop.sensor")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calendar_ticks (
    sensor TEXT NOT NULL, name TEXT NOT NULL, timer TEXT NOT NULL, last_tick REAL NOT NULL,
    missed INTEGER NOT NULL DEFAULT 0, fired INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sensor, name)
);
"""


def source_of(spec: SensorSpec) -> CalendarSource:
    source = spec.dependency.source
    if not isinstance(source, CalendarSource):
        raise ValueError(f"sensor {spec.name} is not a calendar sensor")
    return source


def timer_text(source: CalendarSource) -> str:
    """What the schedule is, in words; a change of it re-arms the schedule."""
    return f"cron '{source.schedule}' {source.timezone or 'UTC'}" if source.schedule else f"every {source.interval}"


def ticks_after(source: CalendarSource, after: datetime):
    return schedule_ticks(after, cron=source.schedule, timezone=source.timezone, interval=source.interval)


def tick_id(model: str, at: datetime) -> str:
    return f"{TICK_PREFIX}{model}@{at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


@dataclass(frozen=True)
class Tick:
    """One tick to offer: its scheduled instant and how many earlier due ticks it stands for."""

    spec: SensorSpec
    at: datetime
    missed: int = 0

    @property
    def metadata(self) -> dict[str, str]:
        return dict(source_of(self.spec).metadata)

    @property
    def event_id(self) -> str:
        return tick_id(self.metadata.get("model", self.spec.name), self.at)

    @property
    def gpu(self) -> bool:
        return self.metadata.get("gpu") == "true"

    @property
    def data(self) -> dict[str, Any]:
        return calendar_event_data(self.at, source_of(self.spec).metadata)

    @property
    def context(self) -> dict[str, str]:
        source = source_of(self.spec)
        return {"id": self.event_id, "type": "calendar", "source": f"{source.source}/{source.event}",
                "subject": ""}


@dataclass(frozen=True)
class TickRecord:
    """The durable record of a schedule: when it last fired (or was armed), and what it skipped."""

    timer: str
    last_tick: datetime
    missed: int
    fired: bool


def newest_due(source: CalendarSource, last: datetime, now: datetime) -> tuple[datetime | None, int]:
    """The newest tick in (last, now] and how many ticks precede it there (at least `_COUNT_LIMIT` - 1
    when there were too many to count)."""
    count, newest = 0, None
    for at in ticks_after(source, last):
        if at > now or count == _COUNT_LIMIT:
            break
        count, newest = count + 1, at
    if count < _COUNT_LIMIT:
        return newest, max(0, count - 1)
    for window in _WINDOWS:
        start = max(last, now - window)
        latest = None
        for at in ticks_after(source, start):
            if at > now:
                break
            latest = at
        if latest is not None:
            return latest, count - 1
    return newest, count - 1


class Calendar:
    """The due ticks of some calendar sensors, and their durable record, for one sensor group."""

    def __init__(self, path: Path | str, group: str, specs: Sequence[SensorSpec]) -> None:
        self.group = group
        self.specs = {spec.name: spec for spec in specs}
        for spec in specs:
            source_of(spec)
        self._db = connect(path)
        self._db.executescript(_SCHEMA)
        self._next_due: float | None = None  # earliest instant anything can be due, once known

    def record(self, name: str) -> TickRecord | None:
        row = self._db.execute("SELECT timer, last_tick, missed, fired FROM calendar_ticks WHERE sensor = ? AND"
                               " name = ?", (self.group, name)).fetchone()
        if row is None:
            return None
        return TickRecord(row[0], datetime.fromtimestamp(row[1], UTC), int(row[2]), bool(row[3]))

    def _store(self, name: str, timer: str, at: datetime, missed: int, fired: bool) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO calendar_ticks VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sensor, name) DO UPDATE SET"
                " timer = excluded.timer, last_tick = excluded.last_tick, missed = excluded.missed,"
                " fired = excluded.fired", (self.group, name, timer, at.timestamp(), missed, int(fired)))

    def due(self, now: float) -> list[Tick]:
        """At most one tick per sensor: the newest that came due since its last; arms new schedules."""
        if self._next_due is not None and now < self._next_due:
            return []
        at_now = datetime.fromtimestamp(now, UTC)
        ticks, upcoming = [], []
        for name, spec in self.specs.items():
            source = source_of(spec)
            record = self.record(name)
            if record is None or record.timer != timer_text(source):
                self._store(name, timer_text(source), at_now, 0, fired=False)
                log(_log, "schedule armed", sensor=name, schedule=timer_text(source), at=at_now.isoformat())
                last = at_now
            else:
                last = record.last_tick
                newest, missed = newest_due(source, last, at_now)
                if newest is not None:
                    ticks.append(Tick(spec, newest, missed))
                    continue
            following = next(ticks_after(source, max(last, at_now)), None)
            if following is not None:
                upcoming.append(following.timestamp())
        self._next_due = None if ticks else min(upcoming, default=None)
        return ticks

    def fired(self, tick: Tick) -> None:
        """The sensor has durably decided `tick`: it becomes the schedule's last."""
        self._store(tick.spec.name, timer_text(source_of(tick.spec)), tick.at, tick.missed, fired=True)
        if tick.missed:
            log(_log, "schedule caught up", level=logging.WARNING, sensor=tick.spec.name, tick=tick.at.isoformat(),
                missed=tick.missed)
        self._next_due = None

    def close(self) -> None:
        self._db.close()


def tick_records(path: Path | str) -> dict[str, TickRecord]:
    """Each calendar sensor's newest record across sensor groups, by sensor name; for display."""
    if not Path(path).is_file():
        return {}
    db = connect(path)
    try:
        db.executescript(_SCHEMA)
        rows = db.execute("SELECT name, timer, last_tick, missed, fired FROM calendar_ticks ORDER BY last_tick")
        return {name: TickRecord(timer, datetime.fromtimestamp(last, UTC), int(missed), bool(fired))
                for name, timer, last, missed, fired in rows.fetchall()}
    finally:
        db.close()
