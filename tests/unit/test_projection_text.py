"""How read models write timestamps and pydantic values as text: the same text however the value
arrives (a replay compares it with what the live read models wrote)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pydantic import TypeAdapter

from orchestrator.domain.schedule import DailyRetention, Retention, Schedule
from projections.base import json_of, ts


def test_ts_is_fixed_width_utc_text_for_every_kind_of_datetime() -> None:
    parsed = TypeAdapter(datetime).validate_json('"2026-11-22T07:59:06Z"')  # pydantic's own UTC zone
    cases = {
        datetime(2026, 11, 22, 7, 59, 6, 223811, tzinfo=UTC): "2026-11-22T07:59:06.223811Z",
        datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC): "2026-01-01T00:00:00.000005Z",
        datetime(2026, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9))): "2026-01-01T00:00:00.000000Z",
        datetime(2025, 12, 31, 21, 30, tzinfo=timezone(timedelta(hours=-3))): "2026-01-01T00:30:00.000000Z",
        parsed: "2026-11-22T07:59:06.000000Z",
    }
    for value, text in cases.items():
        assert ts(value) == text == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    naive = datetime(2026, 3, 1, 12, 0)  # local time, as astimezone reads it
    assert ts(naive) == naive.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_json_of_is_pydantics_json() -> None:
    schedule = Schedule.model_validate({"frequency": "weekly", "times": ["01:00"], "weekdays": ["sunday"]})
    retention = Retention(daily=DailyRetention(days=7))
    assert (
        json_of(schedule)
        == schedule.model_dump_json()
        == ('{"frequency":"weekly","times":["01:00:00"],"weekdays":["sunday"]}')
    )
    assert json_of(retention) == retention.model_dump_json()
