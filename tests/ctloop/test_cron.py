"""Cron expressions and intervals: the grammar the Argo Events calendar accepts, and the instants it ticks at,
daylight-saving changes included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from ctloop.cron import Cron, ScheduleError, interval_ticks, parse_interval, schedule_ticks, zone


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def first(expression: str, after: str, tz: str, n: int) -> list[datetime]:
    return list(islice(Cron.parse(expression).ticks(at(after), ZoneInfo(tz)), n))


def brute_force(cron: Cron, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every UTC minute in (start, end] whose wall-clock reading in `tz` matches: the definition, walked."""
    out, t = [], start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= end:
        wall = t.astimezone(tz)
        if wall.minute in cron.minutes and wall.hour in cron.hours and cron.matches_day(wall.date()):
            out.append(t)
        t += timedelta(minutes=1)
    return out


def test_spring_forward_skips_a_time_the_clock_never_shows():
    # New York springs forward on 2026-03-08: 02:00 EST becomes 03:00 EDT, so 02:30 does not exist that day.
    assert first("30 2 * * *", "2026-03-07T00:00:00-05:00", "America/New_York", 3) == [
        at("2026-03-07T02:30:00-05:00"), at("2026-03-09T02:30:00-04:00"), at("2026-03-10T02:30:00-04:00")]
    assert first("0 3 * * *", "2026-03-07T12:00:00-05:00", "America/New_York", 2) == [
        at("2026-03-08T03:00:00-04:00"), at("2026-03-09T03:00:00-04:00")]


def test_fall_back_ticks_twice_in_the_repeated_hour_an_hour_apart():
    # New York falls back on 2026-11-01: 02:00 EDT becomes 01:00 EST.
    assert first("30 1 * * *", "2026-10-31T12:00:00-04:00", "America/New_York", 4) == [
        at("2026-11-01T01:30:00-04:00"), at("2026-11-01T01:30:00-05:00"), at("2026-11-02T01:30:00-05:00"),
        at("2026-11-03T01:30:00-05:00")]
    # Every half hour through the repeated hour: strictly increasing instants, none lost, none doubled.
    ticks = first("*/30 * * * *", "2026-11-01T00:00:00-04:00", "America/New_York", 8)
    assert [t - ticks[0] for t in ticks] == [timedelta(minutes=30 * i) for i in range(8)]


def test_a_half_hour_daylight_shift_is_handled_like_an_hour():
    # Lord Howe Island moves its clocks by 30 minutes: 02:00 -> 02:30 on 2026-10-04.
    assert first("15 2 * * *", "2026-10-03T00:00:00+10:30", "Australia/Lord_Howe", 2) == [
        at("2026-10-03T02:15:00+10:30"), at("2026-10-05T02:15:00+11:00")]


@pytest.mark.parametrize(("expression", "tz", "start"), [
    ("30 2 * * *", "Europe/Berlin", "2026-03-27T00:00:00+00:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-23T00:00:00+00:00"),
    ("*/20 1-3 * * *", "America/New_York", "2026-10-31T00:00:00+00:00"),
    ("*/20 1-3 * * *", "America/New_York", "2026-03-07T00:00:00+00:00"),
    ("0 0 * * *", "America/Santiago", "2026-09-04T00:00:00+00:00"),  # midnight is skipped there in spring
    ("5 4 1,15 * MON", "Asia/Kolkata", "2026-05-31T00:00:00+00:00"),
    ("0 */6 * JAN-MAR SAT,SUN", "UTC", "2026-01-01T00:00:00+00:00"),
])
def test_ticks_equal_a_minute_by_minute_walk_of_the_definition(expression, tz, start):
    cron, begin = Cron.parse(expression), at(start)
    end = begin + timedelta(days=5)
    walked = brute_force(cron, begin, end, ZoneInfo(tz))
    ticked = [t for t in islice(cron.ticks(begin, ZoneInfo(tz)), len(walked) + 1) if t <= end]
    assert walked and ticked == walked


def test_day_of_month_and_day_of_week_match_either_when_both_are_restricted():
    # The 13th, or any Friday.
    days = [t.date().isoformat() for t in first("0 12 13 * FRI", "2026-02-01T00:00:00+00:00", "UTC", 5)]
    assert days == ["2026-02-06", "2026-02-13", "2026-02-20", "2026-02-27", "2026-03-06"]
    # With day-of-month a star, only the weekday restricts.
    days = [t.date().isoformat() for t in first("0 12 * * 1-5", "2026-02-06T13:00:00+00:00", "UTC", 2)]
    assert days == ["2026-02-09", "2026-02-10"]


def test_steps_ranges_lists_and_names():
    cron = Cron.parse("0-10/5,50 */8 ? jan,Jul-aug sun")
    assert (cron.minutes, cron.hours, cron.months, cron.weekdays) == (
        {0, 5, 10, 50}, {0, 8, 16}, {1, 7, 8}, {0})
    assert Cron.parse("5/20 * * * *").minutes == {5, 25, 45}, "N/step runs from N to the maximum"


@pytest.mark.parametrize(("expression", "problem"), [
    ("@daily", "descriptors such as @daily are not accepted"),
    ("CRON_TZ=Europe/Berlin 0 2 * * *", "put the time zone in schedule.timezone"),
    ("0 2 * *", "has 4 fields; expected 5"),
    ("0 2 * * * *", "has 6 fields; expected 5"),
    ("60 2 * * *", "minute field: 60 in '60' is above the maximum 59"),
    ("0 24 * * *", "hour field: 24 in '24' is above the maximum 23"),
    ("0 2 0 * *", "day of month field: 0 in '0' is below the minimum 1"),
    ("0 2 * 13 *", "month field: 13 in '13' is above the maximum 12"),
    ("0 2 * * 7", "day of week field: 7 in '7' is above the maximum 6"),
    ("0 2 * * funday", "day of week field: 'funday' is not a number or a name"),
    ("10-5 2 * * *", "range '10-5' starts after it ends"),
    ("*/0 2 * * *", "step in '*/0' must be a positive number"),
    ("0 2 30 2 *", "matches no date"),
])
def test_bad_expressions_are_refused_naming_the_part(expression, problem):
    with pytest.raises(ScheduleError) as caught:
        Cron.parse(expression)
    assert problem in str(caught.value)


def test_time_zones_are_iana_names():
    assert zone("Europe/Berlin").key == "Europe/Berlin"
    with pytest.raises(ScheduleError, match="unknown time zone 'Europe/Berlinn'"):
        zone("Europe/Berlinn")


@pytest.mark.parametrize(("text", "seconds"), [("6h", 21600), ("1h30m", 5400), ("1.5h", 5400), ("90s", 90),
                                               ("2m", 120)])
def test_intervals_read_as_go_durations(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(("text", "problem"), [("1d", "not a duration"), ("", "not a duration"),
                                               ("-1h", "not a duration"), ("30s", "shorter than a minute"),
                                               ("90.5s", "not a whole number of seconds")])
def test_bad_intervals_are_refused(text, problem):
    with pytest.raises(ScheduleError, match=problem):
        parse_interval(text)


def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch():
    assert list(islice(interval_ticks(6 * 3600, at("2026-06-01T05:59:59+00:00")), 3)) == [
        at("2026-06-01T06:00:00+00:00"), at("2026-06-01T12:00:00+00:00"), at("2026-06-01T18:00:00+00:00")]
    assert next(interval_ticks(3600, at("2026-06-01T06:00:00+00:00"))) == at("2026-06-01T07:00:00+00:00")


def test_schedule_ticks_picks_cron_else_interval():
    after = at("2026-06-01T00:00:00+00:00")
    assert next(schedule_ticks(after, cron="30 2 * * *", timezone="Europe/Berlin")) == at("2026-06-01T02:30:00+02:00")
    assert next(schedule_ticks(after, interval="2h")) == at("2026-06-01T02:00:00+00:00")
