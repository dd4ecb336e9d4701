"""The scheduler: follows protected items and their policies (through the read models) and asks
the orchestrator to run each item whose next slot is due. Which slot runs, and that it runs once,
is decided by the item itself (RunSchedule), so a restart or a second scheduler adds nothing."""

from __future__ import annotations

import logging
import threading
from datetime import date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from orchestrator.clock import Clock
from orchestrator.domain.schedule import Schedule, slots_between
from orchestrator.errors import OrchestratorError
from orchestrator.write import commands as c
from orchestrator.write.application import Orchestrator
from projections import queries
from projections.base import ts
from projections.store import ReadStore

log = logging.getLogger(__name__)
PRINCIPAL = "system:scheduler"
LOOKBACK = timedelta(days=8)
EPOCH = date(1970, 1, 1)  # every daily or weekly schedule has a slot in any 8 days


class Scheduler:
    def __init__(
        self, app: Orchestrator, store: ReadStore, clock: Clock, retention_hour: int = 2, verify_days: int = 0
    ) -> None:
        self.app = app
        self.store = store
        self.clock = clock
        self.retention_hour = retention_hour
        self.verify_days = verify_days  # BACKUP_VERIFY_INTERVAL_DAYS (0: no scheduled verify)

    def tick(self, now: datetime | None = None) -> list[UUID]:
        """Trigger every due slot; returns the backup jobs created.

        An item is due when its policy's latest slot at or before `now` is after the item's last
        slot: that slot is worked out once per policy, so a tick over many items is one query and a
        string comparison per item (the item's aggregate then decides what runs)."""
        now = now or self.clock.now()
        latest = {p.policy_id: self._latest_slot(p, now) for p in queries.policies_in_use(self.store)}
        created = []
        for item_id, vm_name, last_slot, policy_id in queries.scheduled_rows(self.store):
            slot = latest.get(policy_id)
            if slot is None or (last_slot and last_slot >= slot):
                continue
            try:
                job = self.app.handle(c.RunSchedule(item_id=UUID(item_id), now=now), PRINCIPAL)
            except OrchestratorError as exc:
                log.warning("could not run the schedule of %s: [%s] %s", vm_name, exc.code, exc.message)
                continue
            if job is not None:
                created.append(job)
        self._retention(now)
        self._verify(now)
        self._expire_approvals(now)
        return created

    @staticmethod
    def _latest_slot(policy: queries.PolicyRow, now: datetime) -> str | None:
        """The policy's most recent slot at or before `now`, as stored text (None: none in 8 days,
        which a daily or weekly schedule always has)."""
        schedule = Schedule.model_validate(policy.schedule)
        slots = slots_between(schedule, ZoneInfo(policy.timezone), now - LOOKBACK, now)
        return ts(slots[-1]) if slots else None

    def _retention(self, now: datetime) -> None:
        """One retention job per vault a day, after `retention_hour` UTC."""
        if now.hour < self.retention_hour:
            return
        for vault in queries.vaults(self.store):
            key = f"retention/{vault.vault_id}/{now.date().isoformat()}"
            self.app.handle(c.RunRetention(vault_id=UUID(vault.vault_id), key=key), PRINCIPAL)

    def _verify(self, now: datetime) -> None:
        """One verify job per vault every `verify_days` days (the periods counted from 1970-01-01
        UTC, so every scheduler agrees), after `retention_hour` UTC as retention."""
        if not self.verify_days or now.hour < self.retention_hour:
            return
        period = (now.date() - EPOCH).days // self.verify_days
        for vault in queries.vaults(self.store):
            key = f"verify/{vault.vault_id}/{self.verify_days}/{period}"
            self.app.handle(c.VerifyPoints(vault_id=UUID(vault.vault_id), key=key), PRINCIPAL)

    def _expire_approvals(self, now: datetime) -> None:
        """Record the end of resource guards' approvals past their time (each guard decides which)."""
        for guard_id in queries.guards_with_due_approvals(self.store, now):
            try:
                self.app.handle(c.ExpireApprovals(guard_id=UUID(guard_id), now=now), PRINCIPAL)
            except OrchestratorError as exc:
                log.warning("could not expire the approvals of guard %s: [%s] %s", guard_id, exc.code, exc.message)


class SchedulerThread(threading.Thread):
    def __init__(self, scheduler: Scheduler, interval: float) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.scheduler = scheduler
        self.interval = interval
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.scheduler.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again in %.0fs", self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.join(timeout)
