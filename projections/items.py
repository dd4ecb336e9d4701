"""Items read model: every VM known to a vault, with its registration status."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import VirtualMachine
from projections.base import Projection, ts
from projections.store import Tx

_EVENTS = (
    VirtualMachine.Created,
    VirtualMachine.RegistrationRequested,
    VirtualMachine.Registered,
    VirtualMachine.RegistrationFailed,
    VirtualMachine.Unregistered,
)


class ItemsProjection(Projection):
    name = "items"
    topics = tuple(get_topic(cls) for cls in _EVENTS)
    owned = ("items",)
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}items (item_id TEXT PRIMARY KEY, vm_key TEXT NOT NULL, "
            "vault_id TEXT NOT NULL, vault_name TEXT NOT NULL, vm_name TEXT NOT NULL, "
            "region TEXT NOT NULL, deployment_model TEXT NOT NULL, status TEXT NOT NULL, "
            "last_job_id TEXT NOT NULL, extension_version TEXT NOT NULL DEFAULT '', "
            "updated_at TEXT NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS {i}items_vault ON {t}items (vault_id)",
    )

    @singledispatchmethod
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: VirtualMachine.Created, tx: Tx) -> None:
        vm = event.vm
        tx.execute(
            f"INSERT INTO {self.table('items')} (item_id, vm_key, vault_id, vault_name, vm_name, "
            "region, deployment_model, status, last_job_id, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'registering', ?, ?)",
            (str(event.originator_id), vm.key, str(event.vault_id), event.vault_name,
             vm.display_name, vm.region, vm.deployment_model.value, str(event.job_id),
             ts(event.timestamp)),
        )

    @apply.register
    def _(self, event: VirtualMachine.RegistrationRequested, tx: Tx) -> None:
        self._update(
            tx, event, "vault_id = ?, vault_name = ?, status = 'registering', last_job_id = ?, "
            "extension_version = ''", str(event.vault_id), event.vault_name, str(event.job_id),
        )

    @apply.register
    def _(self, event: VirtualMachine.Registered, tx: Tx) -> None:
        self._update(tx, event, "status = 'registered', extension_version = ?", event.extension_version)

    @apply.register
    def _(self, event: VirtualMachine.RegistrationFailed, tx: Tx) -> None:
        self._update(tx, event, "status = 'registration_failed'")

    @apply.register
    def _(self, event: VirtualMachine.Unregistered, tx: Tx) -> None:
        self._update(tx, event, "status = 'unregistered', last_job_id = ?", str(event.job_id))

    def _update(self, tx: Tx, event: Any, assignments: str, *values: Any) -> None:
        tx.execute(
            f"UPDATE {self.table('items')} SET {assignments}, updated_at = ? WHERE item_id = ?",
            (*values, ts(event.timestamp), str(event.originator_id)),
        )
