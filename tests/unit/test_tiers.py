"""The retention tier rules and the schedule's slots, at the calendar's awkward places."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from orchestrator.domain.schedule import (
    DailyRetention,
    DayOfMonth,
    MonthlyRetention,
    Retention,
    Schedule,
    Tier,
    WeeklyRetention,
    YearlyRetention,
    slots_between,
    tiers_for,
)

UTC = ZoneInfo("UTC")
TOKYO = ZoneInfo("Asia/Tokyo")
BERLIN = ZoneInfo("Europe/Berlin")


def at(y: int, m: int, d: int, h: int = 22, tz: ZoneInfo = UTC) -> datetime:
    return datetime(y, m, d, h, 30, tzinfo=tz)


FULL = Retention(
    daily=DailyRetention(days=30),
    weekly=WeeklyRetention(weekdays=["sunday"], weeks=104),
    monthly=MonthlyRetention(on=DayOfMonth(weeks=["last"], weekdays=["sunday"]), months=120),
    yearly=YearlyRetention(months_of_year=[1], on=DayOfMonth(weeks=["first"], weekdays=["sunday"]), years=99),
)


def test_a_weekday_point_is_daily_only() -> None:
    tiers, expiry = tiers_for(FULL, UTC, at(2026, 11, 18))  # a Wednesday
    assert tiers == [Tier.DAILY] and expiry == at(2026, 12, 18)


def test_the_last_sunday_of_a_month_is_daily_weekly_and_monthly() -> None:
    tiers, expiry = tiers_for(FULL, UTC, at(2026, 11, 29))
    assert tiers == [Tier.DAILY, Tier.WEEKLY, Tier.MONTHLY]
    assert expiry == at(2036, 11, 29)  # 120 months


def test_the_first_sunday_of_january_is_yearly_too() -> None:
    tiers, expiry = tiers_for(FULL, UTC, at(2027, 1, 3))
    assert Tier.YEARLY in tiers and expiry == at(2126, 1, 3)


def test_a_sunday_that_is_not_the_last_is_not_monthly() -> None:
    assert Tier.MONTHLY not in tiers_for(FULL, UTC, at(2026, 11, 22))[0]


@pytest.mark.parametrize(
    ("day", "last"),
    [
        ((2026, 1, 31), True),
        ((2026, 2, 28), True),
        ((2028, 2, 28), False),
        ((2028, 2, 29), True),
        ((2026, 4, 30), True),
        ((2026, 4, 29), False),
    ],
)
def test_last_day_of_month_over_month_ends_and_leap_years(day: tuple[int, int, int], last: bool) -> None:
    retention = Retention(
        daily=DailyRetention(days=7), monthly=MonthlyRetention(on=DayOfMonth(days=["last"]), months=12)
    )
    assert (Tier.MONTHLY in tiers_for(retention, UTC, at(*day))[0]) is last


def test_monthly_expiry_clamps_to_the_end_of_a_shorter_month() -> None:
    retention = Retention(
        daily=DailyRetention(days=7), monthly=MonthlyRetention(on=DayOfMonth(days=["last"]), months=1)
    )
    assert tiers_for(retention, UTC, at(2026, 1, 31))[1] == at(2026, 2, 28)
    assert tiers_for(retention, UTC, at(2028, 1, 31))[1] == at(2028, 2, 29)  # leap year


def test_a_leap_day_kept_a_year_expires_on_february_28() -> None:
    retention = Retention(
        daily=DailyRetention(days=7), yearly=YearlyRetention(months_of_year=[2], on=DayOfMonth(days=["last"]), years=1)
    )
    tiers, expiry = tiers_for(retention, UTC, at(2028, 2, 29))
    assert Tier.YEARLY in tiers and expiry == at(2029, 2, 28)


def test_weekly_points_across_the_new_year_and_iso_week_53() -> None:
    retention = Retention(daily=DailyRetention(days=7), weekly=WeeklyRetention(weekdays=["thursday"], weeks=2))
    # 2026-12-31 is a Thursday in ISO week 53 of 2026; 2027-01-07 is in week 1 of 2027.
    assert at(2026, 12, 31).isocalendar()[1] == 53
    for day in [(2026, 12, 31), (2027, 1, 7)]:
        tiers, expiry = tiers_for(retention, UTC, at(*day))
        assert Tier.WEEKLY in tiers and expiry == at(*day) + timedelta(weeks=2)
    assert Tier.WEEKLY not in tiers_for(retention, UTC, at(2027, 1, 1))[0]


def test_the_first_monday_of_a_month_uses_the_policy_time_zone() -> None:
    retention = Retention(
        daily=DailyRetention(days=7),
        monthly=MonthlyRetention(on=DayOfMonth(weeks=["first"], weekdays=["monday"]), months=6),
    )
    sunday_utc = datetime(2026, 11, 1, 20, 0, tzinfo=timezone.utc)  # already Monday 2 Nov in Tokyo
    assert Tier.MONTHLY in tiers_for(retention, TOKYO, sunday_utc)[0]
    assert Tier.MONTHLY not in tiers_for(retention, UTC, sunday_utc)[0]


def test_daily_slots_keep_local_time_across_a_dst_change() -> None:
    schedule = Schedule(frequency="daily", times=[time(22, 30)])
    slots = slots_between(
        schedule, BERLIN, datetime(2026, 10, 23, tzinfo=timezone.utc), datetime(2026, 10, 27, tzinfo=timezone.utc)
    )
    assert [s.astimezone(BERLIN).strftime("%d %H:%M") for s in slots] == [
        "23 22:30",
        "24 22:30",
        "25 22:30",
        "26 22:30",
    ]
    assert [s.hour for s in slots] == [20, 20, 21, 21]  # UTC moves by the hour


def test_a_slot_in_the_spring_forward_gap_runs_at_the_end_of_the_gap_once() -> None:
    schedule = Schedule(frequency="daily", times=[time(2, 30)])
    slots = slots_between(
        schedule, BERLIN, datetime(2026, 3, 28, 12, tzinfo=timezone.utc), datetime(2026, 3, 29, 12, tzinfo=timezone.utc)
    )
    assert [s.astimezone(BERLIN).strftime("%d %H:%M") for s in slots] == ["29 03:00"]


def test_a_slot_in_the_repeated_autumn_hour_runs_once() -> None:
    schedule = Schedule(frequency="daily", times=[time(2, 30)])
    slots = slots_between(
        schedule,
        BERLIN,
        datetime(2026, 10, 24, 12, tzinfo=timezone.utc),
        datetime(2026, 10, 25, 12, tzinfo=timezone.utc),
    )
    assert len(slots) == 1 and slots[0] == datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)


def test_retention_counts_calendar_days_in_the_policy_zone_across_dst() -> None:
    retention = Retention(daily=DailyRetention(days=7), weekly=WeeklyRetention(weekdays=["sunday"], weeks=1))
    taken = datetime(2026, 3, 28, 23, 30, tzinfo=timezone.utc)  # 00:30 (CET) Sunday 29 March in Berlin
    tiers, expiry = tiers_for(retention, BERLIN, taken)
    assert Tier.WEEKLY in tiers
    # A week on at the same local time (now CEST): one hour less than 7 x 24 hours in absolute time.
    assert expiry.astimezone(BERLIN).strftime("%m-%d %H:%M") == "04-05 00:30"
    assert expiry - taken == timedelta(weeks=1, hours=-1)


def test_weekly_schedules_run_on_their_weekdays_only() -> None:
    schedule = Schedule(frequency="weekly", times=[time(1, 0)], weekdays=["saturday", "wednesday"])
    slots = slots_between(
        schedule, UTC, datetime(2026, 11, 16, tzinfo=timezone.utc), datetime(2026, 11, 30, tzinfo=timezone.utc)
    )
    assert [s.strftime("%a %d") for s in slots] == ["Wed 18", "Sat 21", "Wed 25", "Sat 28"]
