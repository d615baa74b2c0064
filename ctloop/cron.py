"""When a schedule ticks: five-field cron expressions in an IANA time zone, and fixed intervals.

The grammar and the instants are those of the Argo Events calendar (robfig/cron v3, parsed with the
minute, hour, day-of-month, month and day-of-week fields, no descriptors), so a schedule ticks at the
same instants in the cluster and in the local sensor:

- a tick is every whole minute whose wall-clock reading in the zone matches the fields;
- spring forward: a reading the clock skips (02:30 on the day 02:00 jumps to 03:00) never occurs,
  so that day has no such tick;
- fall back: a reading the clock shows twice (01:30 when 02:00 falls back to 01:00) ticks twice,
  once per instant;
- day of month and day of week: when both are restricted (neither is `*` or `?`), a day matches
  either one, as in every cron; otherwise both must match.

An interval ticks on multiples of its length since 1970-01-01T00:00Z (`6h`: 00:00, 06:00, ... UTC).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {n: i for i, n in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                       "dec"), start=1)}
_WEEKDAYS = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# (name, lowest, highest, names) per field, in expression order.
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 6, _WEEKDAYS))
_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}
# No date can read as a given local day more than this long before that day's 00:00 UTC (UTC+14 is the
# furthest zone ahead), so instants earlier than it are final once the previous day is computed.
_AHEAD = timedelta(hours=16)
# A schedule matching no date in this many years matches none (February 30th); robfig gives up after 5.
_HORIZON_DAYS = 366 * 8
MIN_INTERVAL_S = 60.0


class ScheduleError(ValueError):
    """A cron expression, time zone or interval that cannot be used; the message names the part."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. `Europe/Berlin`), or `ScheduleError` naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'") from None


def _number(text: str, field: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ScheduleError(f"{field} field: {text!r} is not a number" + (" or a name" if names else ""))
    return int(text)


def _parse_field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    """The values a field allows, and whether it is a star (`*` or `?`, stepped by at most 1)."""
    values: set[int] = set()
    star = False
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text or part.endswith("/"):
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{field} field: step in {part!r} must be a positive number")
            step = int(step_text)
        if span in ("*", "?"):
            start, end = low, high
            star = star or step == 1
        else:
            first, dash, last = span.partition("-")
            start = _number(first, field, names)
            end = _number(last, field, names) if dash else (high if step_text else start)
        if start < low:
            raise ScheduleError(f"{field} field: {start} in {part!r} is below the minimum {low}")
        if end > high:
            raise ScheduleError(f"{field} field: {end} in {part!r} is above the maximum {high}")
        if start > end:
            raise ScheduleError(f"{field} field: range {part!r} starts after it ends")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        text = expression.strip()
        if text.startswith("@"):
            raise ScheduleError(f"cron {expression!r}: descriptors such as @daily are not accepted by the Argo Events "
                                "calendar; write the five fields, e.g. '0 0 * * *'")
        if text.startswith(("TZ=", "CRON_TZ=")):
            raise ScheduleError(f"cron {expression!r}: put the time zone in schedule.timezone, not in the expression")
        fields = text.split()
        if len(fields) != 5:
            raise ScheduleError(f"cron {expression!r} has {len(fields)} fields; expected 5: "
                                "minute hour day-of-month month day-of-week")
        try:
            parsed = [_parse_field(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
        except ScheduleError as exc:
            raise ScheduleError(f"cron {expression!r}: {exc}") from None
        (minutes, _), (hours, _), (days, any_day), (months, _), (weekdays, any_weekday) = parsed
        cron = cls(text, minutes, hours, days, months, weekdays, any_day, any_weekday)
        if cron.next_after(datetime(2000, 1, 1, tzinfo=UTC), ZoneInfo("UTC")) is None:
            raise ScheduleError(f"cron {expression!r} matches no date")
        return cron

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        on_day = day.day in self.days
        on_weekday = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return on_day and on_weekday
        return on_day or on_weekday

    def _instants(self, day: date, tz: ZoneInfo) -> list[datetime]:
        """Every instant whose wall-clock reading in `tz` is a matching minute of `day`."""
        out = set()
        for hour in self.hours:
            for minute in self.minutes:
                wall = datetime(day.year, day.month, day.day, hour, minute)
                for fold in (0, 1):
                    instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
                    # A reading in a spring-forward gap maps to an instant that reads differently.
                    if instant.astimezone(tz).replace(tzinfo=None) == wall:
                        out.add(instant)
        return sorted(out)

    def ticks(self, after: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """The instants (UTC) strictly after `after`, in order."""
        pending: list[datetime] = []
        day = after.astimezone(tz).date() - timedelta(days=1)
        idle = 0
        while idle < _HORIZON_DAYS:
            if self.matches_day(day):
                idle = 0
                for instant in self._instants(day, tz):
                    if instant > after:
                        heapq.heappush(pending, instant)
            else:
                idle += 1
            day += timedelta(days=1)
            final = datetime(day.year, day.month, day.day, tzinfo=UTC) - _AHEAD
            while pending and pending[0] < final:
                yield heapq.heappop(pending)
        while pending:
            yield heapq.heappop(pending)

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        return next(self.ticks(after, tz), None)


def parse_interval(text: str) -> float:
    """Seconds in a Go duration of hours, minutes and seconds (`6h`, `1h30m`, `90s`), as Argo Events reads it."""
    if not text or _DURATION.sub("", text) != "":
        raise ScheduleError(f"interval {text!r} is not a duration like '6h', '1h30m' or '90s' (units h, m, s)")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    if seconds < MIN_INTERVAL_S:
        raise ScheduleError(f"interval {text!r} is shorter than a minute")
    if seconds != int(seconds):
        raise ScheduleError(f"interval {text!r} is not a whole number of seconds")
    return seconds


def interval_ticks(seconds: float, after: datetime) -> Iterator[datetime]:
    """Multiples of `seconds` since the Unix epoch, strictly after `after`."""
    step = int(seconds)
    n = int(after.timestamp()) // step + 1
    while True:
        yield datetime.fromtimestamp(n * step, UTC)
        n += 1


def schedule_ticks(after: datetime, *, cron: str = "", timezone: str = "UTC",
                   interval: str = "") -> Iterator[datetime]:
    """The ticks of a cron expression in `timezone`, or else of an interval, strictly after `after`."""
    if cron:
        return Cron.parse(cron).ticks(after, zone(timezone or "UTC"))
    return interval_ticks(parse_interval(interval), after)
