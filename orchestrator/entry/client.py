"""The Python client: the product's main interface. `Client()` with no arguments runs the
embedded default (SQLite in ./.backup-orchestrator, in-process queue and workers)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Self, cast
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.utils import get_topic
from pydantic import AwareDatetime, Field

from orchestrator import targets
from orchestrator.audit import history as audit_history
from orchestrator.audit import replay
from orchestrator.audit import verify as chain
from orchestrator.audit.history import HistoryEntry
from orchestrator.clock import Clock
from orchestrator.config import Settings, load_settings
from orchestrator.domain import Identity, Job, RecoveryPoint, Vault, identity, names
from orchestrator.domain.identity import Caller, IdentityRow
from orchestrator.domain.names import vault_id_for
from orchestrator.domain.policy import policy_id_for
from orchestrator.domain.schedule import Retention, Schedule
from orchestrator.domain.values import CheckResult, JobState
from orchestrator.entry.edge import strict
from orchestrator.entry.queries import AsOf, ReadModels
from orchestrator.errors import NotFoundError, OrchestratorError, ServiceUnavailableError
from orchestrator.runtime.bootstrap import Runtime, bootstrap, witness_of
from orchestrator.write import commands as c
from projections import queries
from projections.follower import BATCH
from projections.jobs import JobsProjection
from projections.queries import JobRow
from projections.runner import NAMES as PROJECTION_NAMES
from projections.store import ReadStore

READ_MODEL_TIMEOUT = 30.0
log = logging.getLogger(__name__)
# The principal of the call being served: the API service's authenticated identity (orchestrator/api),
# set around each call it makes on its client; none: the client's own (BACKUP_PRINCIPAL).
_calling_principal: ContextVar[str | None] = ContextVar("calling_principal", default=None)
JOBS_READ_MODEL = JobsProjection.name
Timeout = Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)]  # seconds
Progress = Callable[[int, int], None]


class Client(ReadModels):
    def __new__(cls, settings: Settings | None = None, **overrides: Any) -> Client:
        """With a `url` (BACKUP_URL), the client talks to the API service over HTTP
        (orchestrator/entry/api/remote.py): the same methods, results and error codes."""
        if cls is Client:
            given = {k: v for k, v in overrides.items() if k not in ("start_services", "clock")}
            if (settings.url if isinstance(settings, Settings) else load_settings(**given).url) is not None:
                from orchestrator.entry.api.remote import RemoteClient

                return super().__new__(RemoteClient)
        return super().__new__(cls)

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        start_services: bool | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> None:
        """`overrides` are settings by field name (`data_dir=...`), winning over BACKUP_* variables.
        Services (followers, scheduler, and workers on the embedded queue) start in-process when the
        queue is embedded, unless `start_services` says otherwise. `clock` replaces the system clock
        (simulations and tests)."""
        if settings is not None and not isinstance(settings, Settings):
            raise OrchestratorError(
                "CommandInvalid", "settings must be a Settings (orchestrator.config.load_settings)", field="settings"
            )
        if start_services is not None and not isinstance(start_services, bool):
            raise OrchestratorError("CommandInvalid", "start_services is True, False or None", field="start_services")
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise OrchestratorError("CommandInvalid", "clock must have a now() method", field="clock")
        self.settings = settings or load_settings(**overrides)
        self._runtime: Runtime = bootstrap(self.settings)
        if clock is not None:
            self._runtime.clock = clock
        if start_services if start_services is not None else self.settings.embedded_queue:
            try:
                self._runtime.start_services()
            except BaseException:
                self._runtime.close()
                raise

    # Commands

    @strict
    def create_vault(
        self,
        name: str,
        region: str,
        resource_group: str,
        subscription: str = "default",
        kind: str = "recovery_services",
        replication: str = "geo",
    ) -> str:
        """Create a Recovery Services vault (or, with kind="backup_vault", a classic backup vault).
        Returns the vault id."""
        return str(
            self._do(
                c.CreateVault,
                name=name,
                region=region,
                resource_group=resource_group,
                subscription=subscription,
                kind=kind,
                replication=replication,
            )
        )

    @strict
    def set_replication(self, vault_id: str, replication: str) -> None:
        """Storage replication "geo" or "local"; allowed until the first item is protected."""
        self._do(c.SetReplication, vault_id=vault_id, replication=replication)

    @strict
    def delete_vault(self, vault_id: str) -> None:
        """Delete an empty vault (no VM registered, protected, stopped with data or soft deleted);
        its history stays, and its name is not made again."""
        self._do(c.DeleteVault, vault_id=vault_id)

    @strict
    def set_soft_delete(self, vault_id: str, state: str, retention_days: int = 14) -> None:
        """Soft delete "enabled" (deleted backup data kept `retention_days`, 14 to 180), "disabled",
        or "always_on" (enabled for good)."""
        self._do(
            c.SetSoftDelete,
            vault_id=vault_id,
            state=state,
            retention_days=retention_days,
            now=self._runtime.clock.now(),
        )

    @strict
    def set_immutability(self, vault_id: str, state: str) -> None:
        """Immutability "disabled", "enabled" (no deleting or shortening backup data; reversible) or
        "locked" (enabled for good)."""
        self._do(c.SetImmutability, vault_id=vault_id, state=state, now=self._runtime.clock.now())

    # Multi-user authorization

    @strict
    def create_guard(self, name: str) -> str:
        """A resource guard (2-50 letters, digits, hyphens): attached to vaults, its guard admins
        approve their critical operations. Returns its id."""
        return str(self._do(c.CreateGuard, name=name))

    @strict
    def attach_guard(self, vault_id: str, guard: str) -> None:
        """Protect the vault's critical operations with the resource guard named `guard`."""
        self._do(c.AttachGuard, vault_id=vault_id, guard=guard)

    @strict
    def detach_guard(self, vault_id: str) -> None:
        """Detach the vault's resource guard: itself a critical operation, approved on that guard."""
        self._do(c.DetachGuard, vault_id=vault_id, now=self._runtime.clock.now())

    @strict
    def approve_operation(self, guard: str, vault_id: str, operation: str, minutes: int = 60) -> str:
        """As a guard admin of `guard`, approve one `operation` (disable_soft_delete,
        shorten_retention, delete_data, detach_guard, disable_immutability) on the vault, once,
        for `minutes` (1 to 1440), by another identity. Returns the approval's id."""
        return str(
            self._do(
                c.ApproveOperation,
                guard=guard,
                vault_id=vault_id,
                operation=operation,
                minutes=minutes,
                now=self._runtime.clock.now(),
            )
        )

    @strict
    def discover(self, vault_id: str) -> str:
        """Start a discovery job; its result lists the new VMs of the vault's region."""
        return str(self._do(c.DiscoverVms, vault_id=vault_id))

    @strict
    def register(self, vault_id: str, vm_names: Sequence[str]) -> list[str]:
        """Register VMs (by name, or `cloud-service/name`): one register job each, all or none."""
        return [str(j) for j in self._do(c.RegisterVms, vault_id=vault_id, vm_names=list(vm_names))]

    @strict
    def unregister(self, vault_id: str, vm_name: str) -> str:
        """Unregister a VM from the vault; returns the (already completed) unregister job id."""
        return str(self._do(c.UnregisterVm, vault_id=vault_id, vm_name=vm_name))

    # Policies and protection

    @strict
    def create_policy(
        self,
        vault_id: str,
        name: str,
        schedule: Schedule | dict[str, Any],
        retention: Retention | dict[str, Any],
        timezone: str = "UTC",
    ) -> str:
        """A policy: schedule (daily or weekly, times in `timezone`) and retention tiers. Returns its id."""
        return str(
            self._do(
                c.CreatePolicy, vault_id=vault_id, name=name, schedule=schedule, retention=retention, timezone=timezone
            )
        )

    @strict
    def update_policy(
        self,
        vault_id: str,
        name: str,
        schedule: Schedule | dict[str, Any],
        retention: Retention | dict[str, Any],
        timezone: str = "UTC",
    ) -> int:
        """Edit a policy; its VMs' recovery points take the new retention. Returns how many changed."""
        policy_id = policy_id_for(_uuid(vault_id, "vault_id"), names.POLICY.check(name))
        return int(
            self._do(
                c.UpdatePolicy,
                policy_id=policy_id,
                schedule=schedule,
                retention=retention,
                timezone=timezone,
                now=self._runtime.clock.now(),
            )
        )

    @strict
    def protect(self, vault_id: str, vm_names: Sequence[str], policy: str = "DefaultPolicy") -> list[str]:
        """Protect registered VMs with a policy: one configure-protection job each, all or none."""
        return [str(j) for j in self._do(c.ProtectVms, vault_id=vault_id, vm_names=list(vm_names), policy=policy)]

    @strict
    def change_policy(self, vault_id: str, vm_name: str, policy: str) -> int:
        """Move a protected VM to another policy; returns how many recovery points changed retention."""
        return int(
            self._do(c.ChangePolicy, vault_id=vault_id, vm_name=vm_name, policy=policy, now=self._runtime.clock.now())
        )

    @strict
    def stop_protection(self, vault_id: str, vm_name: str, delete_data: bool = False) -> str:
        """Stop backups of a VM, keeping its recovery points, or deleting them (`delete_data`): soft
        deleted, kept for the vault's soft-delete window, unless the vault's soft delete is disabled."""
        return str(
            self._do(
                c.StopProtection,
                vault_id=vault_id,
                vm_name=vm_name,
                delete_data=delete_data,
                now=self._runtime.clock.now(),
            )
        )

    @strict
    def undelete(self, vault_id: str, vm_name: str) -> str:
        """Bring a soft-deleted VM's backup data back, before its purge: protection stopped, data kept."""
        return str(self._do(c.Undelete, vault_id=vault_id, vm_name=vm_name, now=self._runtime.clock.now()))

    @strict
    def precheck(self, vault_id: str, vm_name: str, stage: str = "backup") -> list[CheckResult]:
        """Run the prechecks of `stage` (register, protect, backup, restore) on a VM's current
        facts. Changes nothing; errors come first."""
        from workers.prechecks import STAGES, evaluate

        if stage not in STAGES:
            raise OrchestratorError(
                "CommandInvalid", f"stage {stage!r} is not one of {', '.join(STAGES)}", field="stage"
            )
        names.check_vm_reference(vm_name)
        vault = self._runtime.app.get(_uuid(vault_id, "vault_id"), Vault)
        matches = [vm for vm in self._runtime.fabric.list_vms(vault.subscription) if vm.ref.answers_to(vm_name)]
        if len(matches) != 1:
            code = "VmNameAmbiguous" if matches else "VmNotFound"
            raise OrchestratorError(
                code, f"{len(matches)} VMs named {vm_name!r} in subscription {vault.subscription!r}", field="vm_name"
            )
        # An embedded client is its own worker; a distributed one leaves the workers' key setting to them.
        key_protection = self.settings.key_protection_key is not None or not self.settings.embedded_queue
        return evaluate(
            matches[0], vault.kind, vault.region, stage, self._runtime.fabric, key_protection=key_protection
        )

    # Backups and restores

    @strict
    def backup_now(self, vault_id: str, vm_name: str, retain_until: datetime | None = None) -> str:
        """Back up a protected VM now; its recovery point is kept until `retain_until` (default 30 days)."""
        return str(
            self._do(
                c.BackupNow,
                vault_id=vault_id,
                vm_name=vm_name,
                retain_until=retain_until,
                now=self._runtime.clock.now(),
            )
        )

    @strict
    def restore(
        self,
        recovery_point_id: str,
        target_vm_name: str,
        mode: str = "vm",
        target_dir: str | Path | None = None,
        region: str | None = None,
    ) -> str:
        """Restore a recovery point as a new VM (`mode="vm"`; refused if the VM exists) or its disks
        into a folder of their own, `target_dir/<target_vm_name>/` (`mode="disks"`; `target_dir` absolute,
        not one of the deployment's own directories). Every disk is verified against the manifest."""
        command = c.build(
            c.Restore,
            recovery_point_id=recovery_point_id,
            target_vm_name=target_vm_name,
            mode=mode,
            target_dir=str(target_dir) if target_dir else "",
            region=region or "",
        )
        if command.target_dir:
            targets.check_target_dir(command.target_dir, targets.product_dirs(self.settings))
        return str(self._send(command))

    @strict
    def restore_keys(self, recovery_point_id: str, key_vault: str | None = None) -> str:
        """Put an encrypted VM's BEK secret (and KEK key) back into its key vault (or `key_vault`)
        from a recovery point, so that restores refused with `KeyOrSecretNotFound` can run."""
        return str(self._do(c.RestoreKeys, recovery_point_id=recovery_point_id, key_vault=key_vault or ""))

    @strict
    def verify(self, vault_id: str, vm_name: str | None = None, recovery_point_id: str | None = None) -> str:
        """A verify job: the vault's live recovery points (one VM's, or one point) read back from the
        vault store, every block checked; each point's result is recorded on it (the recovery points'
        `last_verified_at`, `verify_status`, `verify_problem`) and a failed one is a dashboard alert."""
        return str(
            self._do(
                c.VerifyPoints,
                vault_id=vault_id,
                vm_name=vm_name,
                recovery_point_id=_uuid(recovery_point_id, "recovery_point_id") if recovery_point_id else None,
            )
        )

    @strict
    def run_retention(self, vault_id: str) -> str:
        """Expire the vault's recovery points past retention and collect their unused data now."""
        return str(self._do(c.RunRetention, vault_id=vault_id))

    @strict
    def check_vault(self, vault_id: str) -> dict[str, Any]:
        """The vault store's integrity: every manifest readable (`bad_manifests`: the file and what is
        wrong) and its blocks there and hashing right (`missing`, `corrupt`); `clean` when none of
        those is found. Also lists orphan blocks and temporary files, and measures `stored_bytes` (the
        block files' sizes, what the dashboard's stored bytes count). Changes nothing."""
        from workers.vaultcrypto import vault_kek
        from workers.vaultstore import open_vault_store

        vault = _uuid(vault_id, "vault_id")
        kek = vault_kek(self.settings)
        return open_vault_store(self.settings.vault_store_path, self.settings.s3_location, vault, kek).check()

    @strict
    def rewrap_vault_keys(self) -> dict[str, str]:
        """Rotate the vault stores' key-encryption key: each vault's data key, opened with
        BACKUP_VAULT_KEY_PREVIOUS, is wrapped under BACKUP_VAULT_KEY and its old wrapping removed; no
        block or manifest is rewritten. By vault id: `rewrapped`, `unchanged` (wrapped under the new
        key already, or nothing written yet). Run it again after a failure: it goes on where it
        stopped. `VaultKeyWrong` for a vault wrapped under neither key (nothing of it changed)."""
        from workers.objects import LocalObjects, S3Objects
        from workers.vaultcrypto import VaultKeys, previous_kek, vault_kek

        old, new = previous_kek(self.settings), vault_kek(self.settings)
        root, s3 = self.settings.vault_store_path, self.settings.s3_location
        ids = {row.vault_id for row in self.vaults()}
        if s3 is None and root.is_dir():
            ids |= {p.name for p in root.iterdir() if p.is_dir() and _is_id(p.name)}
        outcome: dict[str, str] = {}
        for vault_id in sorted(ids):
            objects = LocalObjects(root / vault_id) if s3 is None else S3Objects.at(s3, vault_id)
            outcome[vault_id] = "rewrapped" if VaultKeys(objects, old, vault_id).rewrap(new) else "unchanged"
        return outcome

    @strict
    def collection(self, vault_id: str) -> dict[str, Any]:
        """The vault's block ledger: the backups holding leases now, the collection under way (its
        phase, candidates, the backups it waits for, the blocks rescued and how far its sweep has
        come) and the last one finished. Changes nothing."""
        from orchestrator.domain.ledger import BlockLedger, ledger_id_for

        vault = self._runtime.app.get(_uuid(vault_id, "vault_id"), Vault)
        ledger = self._runtime.app.find(ledger_id_for(vault.id), BlockLedger)
        return (ledger or BlockLedger(vault_id=vault.id)).view()

    @strict
    def run_scheduler(self, now: AwareDatetime | None = None) -> list[str]:
        """One scheduler pass (the scheduler service does this every BACKUP_SCHEDULER_INTERVAL)."""
        self._catch_up()
        scheduler = self._runtime.scheduler()
        return [str(j) for j in scheduler.tick(now)]

    # Audit

    @strict
    def audit_verify(
        self, expect: tuple[int, str] | None = None, progress: Progress | None = None, *, chain_only: bool = False
    ) -> chain.Report:
        """Recompute the hash chain over the stored history and compare it with the recorded one and
        its checkpoints: every modified, deleted, inserted or reordered stored event is named, and so
        are a chain table cut short (`chain_truncated`) and stored rows that do not read back
        (`malformed`). Then, unless `chain_only`, every read model is replayed from the events up to
        its live position and compared (`read_model_mismatch`). `expect` is a (position, hash) kept
        elsewhere from an earlier run. With the audit key, every event's seal is checked
        (`unauthenticated`, `forged`); with the witness, its signed heads (`witness_mismatch`,
        `rolled_back`, `witness_invalid`). Changes nothing, and never runs the chain follower itself.

        A client that runs the embedded services still has the chain follower running beside this,
        which chains whatever is appended to the history, forgeries included, before a later check
        reads it: keep the head this prints elsewhere (and pass it back as `expect`), or run the
        check from a process without services (`Client(start_services=False)`, as `backupctl audit
        verify` does)."""
        with store_errors("nothing was changed: retry"):
            return chain.verify(
                self._runtime.app,
                self._runtime.store,
                expect,
                progress,
                read_models=not chain_only,
                witness=witness_of(self.settings),
            )

    # Identities of the API service

    @strict
    def create_identity(self, name: str, role: str, vault_id: str | None = None, guard: str | None = None) -> str:
        """An identity of the API service with `role` (reader, operator, contributor, owner), on every
        vault or on `vault_id` only; or guard_admin, on every resource guard or on `guard` only (made
        with local access only: the API service refuses it). Returns its API token, which is shown
        this once: only its hash is stored. A revoked identity's name may be made again (with a new
        token)."""
        secret = identity.new_secret()
        identity_id = self._do(
            c.CreateIdentity,
            name=name,
            role=role,
            vault_id=vault_id,
            guard=guard,
            token_hash=identity.token_hash(secret),
        )
        return identity.token_for(identity_id, secret)

    @strict
    def revoke_identity(self, name: str) -> None:
        """Revoke an identity: its token is refused from the next call on."""
        self._do(c.RevokeIdentity, name=name)

    def identities(self) -> list[IdentityRow]:
        """Every identity ever made, revoked ones too, by name (the event store's, a few events each)."""
        app = self._runtime.app
        head = app.recorder.max_notification_id() or 0
        topics = [get_topic(Identity.Created)]
        ids = {
            n.originator_id
            for n in app.recorder.select_notifications(start=1, limit=head + 1, stop=head, topics=topics)
        }
        rows = [IdentityRow.of(app.get(UUID(str(i)), Identity)) for i in ids]
        return sorted(rows, key=lambda row: row.name.lower())

    @strict
    def authenticate(self, token: str) -> Caller | None:
        """Who an API token is (None: no identity has it, or it was revoked)."""
        parsed = identity.parse_token(token)
        if parsed is None:
            return None
        found = self._runtime.app.find(parsed[0], Identity, copy=False)
        if found is None or not found.accepts(parsed[1]):
            return None
        return Caller(
            name=found.name,
            role=found.role,
            vault_id=str(found.vault_id) if found.vault_id else None,
            guard_id=str(found.guard_id) if found.guard_id else None,
        )

    def vault_of(self, entity_id: str, field: str) -> str:
        """The vault of a job (`field` "job_id") or a recovery point ("recovery_point_id")."""
        cls: type[Job] | type[RecoveryPoint] = Job if field == "job_id" else RecoveryPoint
        return str(self._runtime.app.get(_uuid(entity_id, field), cls).vault_id)

    @contextmanager
    def calling_as(self, principal: str) -> Iterator[None]:
        """The commands sent inside the block are `principal`'s (the API service's caller)."""
        token = _calling_principal.set(principal)
        try:
            yield
        finally:
            _calling_principal.reset(token)

    # Jobs

    @strict
    def job(self, job_id: str) -> JobRow:
        """One job as the jobs read model shows it."""
        self._catch_up()
        row = queries.job(self._runtime.store, str(_uuid(job_id, "job_id")))
        if row is None:
            raise NotFoundError("JobNotFound", f"no job with id {job_id}")
        return row

    @strict
    def wait(self, job_id: str, timeout: Timeout = 120.0) -> JobRow:
        """Wait for a job to end (completed, with warnings, or failed) and return it."""
        return self.wait_all([str(_uuid(job_id, "job_id"))], timeout)[0]

    @strict
    def wait_all(self, job_ids: Sequence[str], timeout: Timeout = 300.0) -> list[JobRow]:
        """Wait for every job to end and return them (in the order given). One watch for all: each
        poll asks whether the log moved and, when it did, reads only the job-ending events stored
        since, so waiting on a hundred jobs costs about what waiting on one does."""
        deadline = time.monotonic() + timeout
        ids = [_uuid(j, "job_ids") for j in job_ids]
        pending = set(ids)
        seen = -1
        while True:
            # A store that does not answer, or read models still catching up (after an outage), are
            # waited out like the jobs themselves, until the deadline.
            try:
                with store_errors("the jobs go on: wait again"):
                    if pending:
                        seen = self._ended(pending, seen)
                    if not pending:
                        return self._job_rows(ids)
            except ServiceUnavailableError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("waiting for %d job(s): %s", len(pending) or len(job_ids), exc.message)
                time.sleep(0.5)
                continue
            if time.monotonic() > deadline:
                first = next(given for given, j in zip(job_ids, ids, strict=True) if j in pending)
                raise OrchestratorError(
                    "WaitTimeout",
                    f"job {first} was still in progress after {timeout:.0f}s"
                    + (f" ({len(pending) - 1} more with it)" if len(pending) > 1 else ""),
                )
            time.sleep(0.02)

    def _job_rows(self, job_ids: Sequence[UUID]) -> list[JobRow]:
        """The jobs' rows, once the read models have seen every event stored so far."""
        store = self._read_store()
        rows = [queries.job(store, str(j)) for j in job_ids]
        missing = [j for j, row in zip(job_ids, rows, strict=True) if row is None]
        if missing:
            raise NotFoundError("JobNotFound", f"no job with id {missing[0]}")
        return cast(list[JobRow], rows)

    def _ended(self, pending: set[UUID], seen: int) -> int:
        """Drop from `pending` the jobs that ended; returns the log position read up to. The first
        time (`seen` < 0), the jobs read model tells which had ended as of its position; after that,
        only the job-ending events stored since are read."""
        app = self._runtime.app
        head = app.recorder.max_notification_id() or 0
        if seen < 0:
            seen = self._ended_as_shown(pending)
        while seen < head and pending:
            batch = app.recorder.select_notifications(start=seen + 1, limit=BATCH, stop=head, topics=Job.ENDING_TOPICS)
            pending.difference_update(n.originator_id for n in batch)
            seen = batch[-1].id if len(batch) == BATCH else head
        return max(seen, head)

    def _ended_as_shown(self, pending: set[UUID]) -> int:
        """Drop from `pending` the jobs the jobs read model shows ended, in one query (a job it does
        not show yet is read from the event store, which also finds an unknown one); returns the
        read model's position, read before its rows, so every job that ended after it has its
        job-ending event after it in the log."""
        store = self._runtime.store
        position = store.position(JOBS_READ_MODEL)
        shown = queries.job_states(store, [str(job_id) for job_id in pending])
        for job_id in list(pending):
            status = shown.get(str(job_id))
            if status is None:
                ended = self._runtime.app.get(job_id, Job).state.is_terminal  # JobNotFound for no such job
            else:
                ended = JobState(status).is_terminal
            if ended:
                pending.discard(job_id)
        return position

    # Read models

    @strict
    def vault_id(self, name: str, subscription: str = "default") -> str:
        """The id of the vault called `name` in `subscription`."""
        vault_id = vault_id_for(subscription, name)
        if vault_id not in self._runtime.app.repository:
            raise NotFoundError("VaultNotFound", f"no vault {name!r} in subscription {subscription!r}")
        return str(vault_id)

    def health(self) -> dict[str, Any]:
        """Whether this process reaches the event store and the queue, and how far each read model
        trails the event log (`healthy`: both answer and no read model is over 1,000 events behind)."""
        from orchestrator.entry.health import check

        return check(self._runtime)

    def close(self) -> None:
        self._runtime.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _do(self, command_class: type[c.C], **values: Any) -> Any:
        return self._send(c.build(command_class, **values))

    def _send(self, command: c.Command) -> Any:
        """A command, as this client's principal: an operator's (the application refuses anything else
        from one, `CommandNotAllowed`). Workers report through their own path (workers/context.py), the
        product's services through theirs."""
        principal = _calling_principal.get() or self.settings.principal
        with store_errors("the command may or may not have been stored: look, then retry"):
            return self._runtime.app.handle(command, principal)

    def _read_store(self) -> ReadStore:
        """The live read models, once they have seen every event stored so far."""
        with store_errors("nothing was changed: retry"):
            self._catch_up()
        return self._runtime.store

    @strict
    def as_of(self, when: AwareDatetime, progress: Progress | None = None) -> AsOf:
        """The read models as they were at `when` (jobs, items, vaults, recovery points, policies,
        dashboard), rebuilt from the events stored up to that instant into a scratch store. Close it
        (or use it as a context manager) when done."""
        scratch = replay.ScratchStore()
        try:
            events = replay.rebuild(self._runtime.app, scratch.store, until=when, progress=progress)
        except BaseException:
            scratch.close()
            raise
        return AsOf(scratch.store, when, events, scratch)

    @strict
    def history(
        self,
        entity_id: str | None = None,
        vault_id: str | None = None,
        vm_name: str | None = None,
        event_type: str | None = None,
        start: AwareDatetime | None = None,
        end: AwareDatetime | None = None,
    ) -> list[HistoryEntry]:
        """The stored events matching every filter given, oldest first, each with its time and the
        principal who caused it. `event_type` is a topic or its prefix (`job`, `job.failed`)."""
        return list(
            audit_history.history(
                self._runtime.app,
                self._runtime.store,
                entity_id=_uuid(entity_id, "entity_id") if entity_id else None,
                vault_id=_uuid(vault_id, "vault_id") if vault_id else None,
                vm_name=vm_name,
                event_type=event_type,
                start=start,
                end=end,
            )
        )

    @strict
    def audit_replay(self, progress: Progress | None = None) -> replay.ReplayReport:
        """Rebuild every read model from scratch into a fresh store, up to where the live ones are,
        and compare digests (and rows) with the live ones. Changes nothing."""
        self._catch_up()
        return replay.replay(self._runtime.app, self._runtime.store, progress)

    def _catch_up(self) -> None:
        """Read your writes: wait until the read models have seen every event stored so far."""
        head = self._runtime.app.recorder.max_notification_id() or 0
        if not self._runtime.store.wait(PROJECTION_NAMES, head, READ_MODEL_TIMEOUT):
            raise ServiceUnavailableError(
                "ReadModelBehind",
                f"the read models did not catch up with the event log within "
                f"{READ_MODEL_TIMEOUT:.0f}s; is the projections service running?",
            )


@contextmanager
def store_errors(outcome: str) -> Iterator[None]:
    """A lost connection to the event or read store, or a full disk under it, becomes one retryable
    error that says which (`EventStoreUnavailable`)."""
    import sqlite3  # the read store's driver, whose errors reach here unwrapped

    from orchestrator import safefs

    try:
        yield
    except (OperationalError, InterfaceError, sqlite3.OperationalError, sqlite3.InterfaceError, OSError) as exc:
        causes = [exc, exc.__cause__, exc.__context__]
        if any(
            (isinstance(e, OSError) and safefs.is_full(e))
            or getattr(e, "sqlstate", None) == "53100"
            or getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            for e in causes
        ):  # ENOSPC, EDQUOT
            raise ServiceUnavailableError(
                "EventStoreUnavailable",
                (
                    f"the event store's disk is full ({exc}): free space where it keeps its data (BACKUP_DATA_DIR, "
                    f"or the PostgreSQL server's disk); {outcome}"
                ),
            ) from None
        if isinstance(exc, OSError):
            raise
        raise ServiceUnavailableError(
            "EventStoreUnavailable", f"the event store did not answer ({exc}); {outcome}"
        ) from None


def _uuid(value: str, field: str) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise OrchestratorError("CommandInvalid", f"{field} {value!r} is not an id", field=field) from None


def _is_id(name: str) -> bool:
    try:
        return str(UUID(name)) == name
    except ValueError:
        return False
