"""Backup policy values: when backups run, and which tiers keep their recovery points how long.

Tier rules (applied in the policy's time zone, on the local date a point was taken):
- daily: every scheduled point, kept N days;
- weekly: points taken on the chosen weekdays, kept N weeks;
- monthly: points on the chosen days of the month ("first Monday", "last Sunday", day 1-28 or
  "last"), kept N months (calendar months: Jan 31 + 1 month = Feb 28 or 29);
- yearly: the same selectors in the chosen months, kept N years (Feb 29 + 1 year = Feb 28).
A point's expiry is its time plus its longest matching tier.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator, Field, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from orchestrator.domain.base import Value
from orchestrator.errors import DomainError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEK_ORDINALS = ("first", "second", "third", "fourth", "last")
MAX_TIMES_PER_DAY = 6
RANGES = {"daily": (7, 9999), "weekly": (1, 5163), "monthly": (1, 1188), "yearly": (1, 99)}


class Tier(str, Enum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    ON_DEMAND = "on_demand"


def _time_of_day(value: Any) -> Any:
    """A time of day is a `time` or "HH:MM" text, never a number (pydantic would read 3600 as 01:00)."""
    if not isinstance(value, (time, str)):
        raise PydanticCustomError("time_type", "a time of day is HH:MM text or a datetime.time")
    return value


TimeOfDay = Annotated[time, BeforeValidator(_time_of_day)]


class Schedule(Value):
    frequency: Literal["daily", "weekly"]
    times: list[TimeOfDay] = Field(min_length=1)
    weekdays: list[StrictStr] = Field(default_factory=list)  # weekly schedules only


class DayOfMonth(Value):
    """Which days of a month match: week-based ("first"/"last" + weekdays) or day-based."""

    weeks: list[StrictStr] = Field(default_factory=list)  # first, second, third, fourth, last
    weekdays: list[StrictStr] = Field(default_factory=list)
    days: list[StrictInt | Literal["last"]] = Field(default_factory=list)  # 1-28, or "last"

    def matches(self, day: date) -> bool:
        if self.days:
            last = calendar.monthrange(day.year, day.month)[1]
            return day.day in self.days or ("last" in self.days and day.day == last)
        if WEEKDAYS[day.weekday()] not in self.weekdays:
            return False
        ordinal = WEEK_ORDINALS[(day.day - 1) // 7] if day.day <= 28 else "fifth"
        last = day.day + 7 > calendar.monthrange(day.year, day.month)[1]
        return ordinal in self.weeks or ("last" in self.weeks and last)


# Counts are whole numbers given as numbers: not True, not "30", not 30.0.


class DailyRetention(Value):
    days: StrictInt


class WeeklyRetention(Value):
    weekdays: list[StrictStr] = Field(min_length=1)
    weeks: StrictInt


class MonthlyRetention(Value):
    on: DayOfMonth
    months: StrictInt


class YearlyRetention(Value):
    months_of_year: list[StrictInt] = Field(min_length=1)
    on: DayOfMonth
    years: StrictInt


class Retention(Value):
    daily: DailyRetention | None = None
    weekly: WeeklyRetention | None = None
    monthly: MonthlyRetention | None = None
    yearly: YearlyRetention | None = None


def default_schedule() -> Schedule:
    return Schedule(frequency="daily", times=[time(22, 30)])


def default_retention() -> Retention:
    return Retention(daily=DailyRetention(days=30))


def _refuse(code: str, field: str, message: str) -> DomainError:
    return DomainError(code, message, field=field)


def check_schedule(schedule: Schedule) -> None:
    if len(schedule.times) > MAX_TIMES_PER_DAY or len(set(schedule.times)) != len(schedule.times):
        raise _refuse(
            "ScheduleTimesInvalid", "schedule.times", f"a schedule has 1 to {MAX_TIMES_PER_DAY} distinct times a day"
        )
    if any(t.second or t.microsecond or t.tzinfo for t in schedule.times):
        raise _refuse("ScheduleTimesInvalid", "schedule.times", "schedule times are HH:MM in the policy's time zone")
    _check_weekdays(schedule.weekdays, "schedule.weekdays")
    if schedule.frequency == "weekly" and not schedule.weekdays:
        raise _refuse("ScheduleWeekdaysRequired", "schedule.weekdays", "a weekly schedule names its weekdays")
    if schedule.frequency == "daily" and schedule.weekdays:
        raise _refuse(
            "ScheduleWeekdaysNotAllowed", "schedule.weekdays", "a daily schedule runs every day; drop weekdays"
        )


def check_retention(retention: Retention, schedule: Schedule) -> None:
    """The rules in the order an operator meets them: how many points each tier keeps, which tiers
    the schedule needs, then each tier's selectors."""
    _check_tier_counts(retention)
    _check_tiers_fit(retention, schedule)
    if retention.weekly:
        _check_weekdays(retention.weekly.weekdays, "retention.weekly.weekdays")
    if retention.monthly:
        _check_day_of_month(retention.monthly.on, "retention.monthly.on")
    if retention.yearly:
        months = retention.yearly.months_of_year
        if not all(1 <= m <= 12 for m in months) or len(set(months)) != len(months):
            raise _refuse("RetentionSelectorInvalid", "retention.yearly.months_of_year", "months are distinct, 1-12")
        _check_day_of_month(retention.yearly.on, "retention.yearly.on")


def _check_tier_counts(retention: Retention) -> None:
    counts = {
        "daily": retention.daily and retention.daily.days,
        "weekly": retention.weekly and retention.weekly.weeks,
        "monthly": retention.monthly and retention.monthly.months,
        "yearly": retention.yearly and retention.yearly.years,
    }
    kept = {tier: count for tier, count in counts.items() if getattr(retention, tier) is not None}
    if not kept:
        raise _refuse("RetentionRequired", "retention", "a policy keeps its points in at least one tier")
    for tier, count in kept.items():
        low, high = RANGES[tier]
        if not low <= int(count or 0) <= high:
            raise _refuse(
                "RetentionOutOfRange", f"retention.{tier}", f"{tier} retention of {count} is outside {low}-{high}"
            )


def _check_tiers_fit(retention: Retention, schedule: Schedule) -> None:
    if schedule.frequency == "daily" and retention.daily is None:
        raise _refuse("DailyRetentionRequired", "retention.daily", "a daily schedule needs daily retention")
    if schedule.frequency != "weekly":
        return
    if retention.daily is not None:
        raise _refuse("DailyRetentionNotAllowed", "retention.daily", "a weekly schedule cannot keep daily points")
    if retention.weekly is None or set(retention.weekly.weekdays) != set(schedule.weekdays):
        raise _refuse(
            "WeeklyRetentionDaysMismatch",
            "retention.weekly.weekdays",
            "a weekly schedule keeps weekly points on exactly its scheduled weekdays",
        )


def _check_weekdays(weekdays: list[str], field: str) -> None:
    bad = [d for d in weekdays if d not in WEEKDAYS]
    if bad or len(set(weekdays)) != len(weekdays):
        raise _refuse(
            "WeekdayInvalid", field, f"weekdays are distinct names from {', '.join(WEEKDAYS)}; got {weekdays}"
        )


def _check_day_of_month(on: DayOfMonth, field: str) -> None:
    if bool(on.days) == bool(on.weeks or on.weekdays):
        raise _refuse(
            "RetentionSelectorInvalid",
            field,
            "choose either days of the month (1-28 or 'last') or weeks ('first'..'last') with weekdays",
        )
    if on.days and (not all(d == "last" or 1 <= int(d) <= 28 for d in on.days) or len(set(on.days)) != len(on.days)):
        raise _refuse("RetentionSelectorInvalid", field, "days of the month are distinct, 1-28 or 'last'")
    if on.weeks or on.weekdays:
        if not on.weeks or not all(w in WEEK_ORDINALS for w in on.weeks) or len(set(on.weeks)) != len(on.weeks):
            raise _refuse("RetentionSelectorInvalid", field, f"weeks are distinct, from {', '.join(WEEK_ORDINALS)}")
        if not on.weekdays:
            raise _refuse("RetentionSelectorInvalid", field, "week-based selectors name weekdays too")
        _check_weekdays(on.weekdays, field)


def add_months(moment: datetime, months: int) -> datetime:
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def tiers_for(retention: Retention, tz: ZoneInfo, taken_at: datetime) -> tuple[list[Tier], datetime]:
    """The tiers a scheduled point taken at `taken_at` belongs to, and when it expires."""
    local = taken_at.astimezone(tz)
    day = local.date()
    candidates: list[tuple[Tier, datetime]] = []
    if retention.daily:
        candidates.append((Tier.DAILY, local + timedelta(days=retention.daily.days)))
    if retention.weekly and WEEKDAYS[day.weekday()] in retention.weekly.weekdays:
        candidates.append((Tier.WEEKLY, local + timedelta(weeks=retention.weekly.weeks)))
    if retention.monthly and retention.monthly.on.matches(day):
        candidates.append((Tier.MONTHLY, add_months(local, retention.monthly.months)))
    yearly = retention.yearly
    if yearly and day.month in yearly.months_of_year and yearly.on.matches(day):
        candidates.append((Tier.YEARLY, add_months(local, 12 * yearly.years)))
    if not candidates:
        return [], taken_at
    expiry = max(when for _, when in candidates)
    return [tier for tier, _ in candidates], expiry.astimezone(UTC)


def slots_between(schedule: Schedule, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """Scheduled instants (UTC) in (after, until]. A local time a DST change skips runs at the
    first instant after the gap; one it repeats runs once, at its first occurrence."""
    slots: list[datetime] = []
    day = after.astimezone(tz).date() - timedelta(days=1)
    last_day = until.astimezone(tz).date()
    while day <= last_day:
        if schedule.frequency == "daily" or WEEKDAYS[day.weekday()] in schedule.weekdays:
            for at in sorted(schedule.times):
                slot = _local_instant(day, at, tz)
                if after < slot <= until:
                    slots.append(slot)
        day += timedelta(days=1)
    return sorted(set(slots))


def _local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    naive = datetime.combine(day, at)
    utc = naive.replace(tzinfo=tz).astimezone(UTC)  # fold=0: a repeated time's first
    if utc.astimezone(tz).replace(tzinfo=None) == naive:
        return utc
    # Skipped by a spring-forward change: walk from just before the gap to its end.
    utc = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    while utc.astimezone(tz).replace(tzinfo=None) < naive:
        utc += timedelta(minutes=1)
    return utc


def retention_shortened(old: Retention, new: Retention) -> str:
    """How `new` keeps less than `old` ("" when it does not): a tier dropped, kept fewer days,
    weeks, months or years, or selecting fewer weekdays or months. (Which day of the month a tier
    keeps is a choice, not a length: existing points it changes are checked one by one.)"""
    counts = (
        ("daily", "days", old.daily and old.daily.days, new.daily and new.daily.days),
        ("weekly", "weeks", old.weekly and old.weekly.weeks, new.weekly and new.weekly.weeks),
        ("monthly", "months", old.monthly and old.monthly.months, new.monthly and new.monthly.months),
        ("yearly", "years", old.yearly and old.yearly.years, new.yearly and new.yearly.years),
    )
    for tier, unit, before, after in counts:
        if before and not after:
            return f"the {tier} tier is dropped"
        if before and after and after < before:
            return f"the {tier} tier keeps {after} {unit} instead of {before}"
    if old.weekly and new.weekly and not set(old.weekly.weekdays) <= set(new.weekly.weekdays):
        return "the weekly tier keeps fewer weekdays"
    if old.yearly and new.yearly and not set(old.yearly.months_of_year) <= set(new.yearly.months_of_year):
        return "the yearly tier keeps fewer months"
    return ""
