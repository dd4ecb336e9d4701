"""`backupctl` commands for policies, protection, backups, recovery points, restores and retention."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ValidationError

from orchestrator.entry.cli.common import (
    JOB_COLUMNS,
    AsOfTime,
    Json,
    Subscription,
    Wait,
    app,
    as_utc,
    emit,
    read,
    run,
    vault_ref,
)
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.entry.client import Client

policy_app = typer.Typer(no_args_is_help=True, help="Backup policies: schedule and retention.")
retention_app = typer.Typer(no_args_is_help=True, help="Retention of recovery points.")
schedule_app = typer.Typer(no_args_is_help=True, help="The backup scheduler.")
key_app = typer.Typer(no_args_is_help=True, help="Keys the orchestrator's settings hold.")
app.add_typer(policy_app, name="policy")
app.add_typer(retention_app, name="retention")
app.add_typer(schedule_app, name="schedule")
app.add_typer(key_app, name="key")

Vault = Annotated[str, typer.Option("--vault", "-v", help="Vault name (or id).")]
PolicyFileOption = Annotated[
    Path | None, typer.Option("--file", help="YAML or JSON with schedule, retention, timezone.")
]
DailyAt = Annotated[list[str] | None, typer.Option("--at", help="Backup time HH:MM (repeat for more).")]
WeeklyOn = Annotated[str | None, typer.Option("--weekly-on", help="Weekly schedule on these days: sunday,wednesday.")]
KeepDays = Annotated[int | None, typer.Option("--keep-days", help="Daily retention in days.")]
KeepWeeks = Annotated[int | None, typer.Option("--keep-weeks", help="Weekly retention in weeks.")]
TimeZone = Annotated[str, typer.Option("--timezone", help="IANA time zone of the schedule.")]


class PolicyFile(BaseModel):
    """What `--file` holds: a policy's schedule and retention (their rules are the domain's), and
    optionally its time zone."""

    schedule: dict[str, Any]
    retention: dict[str, Any]
    timezone: str | None = None


def _read_policy_file(file: Path, tz: str) -> dict[str, Any]:
    """The policy in `file` (JSON by its suffix, else YAML), or `CommandInvalid` saying what is wrong."""
    import yaml  # here: only a policy file needs it

    try:
        text = file.read_text(encoding="utf-8")
        spec = PolicyFile.model_validate(json.loads(text) if file.suffix == ".json" else yaml.safe_load(text))
    except OSError as exc:
        why = exc.strerror or str(exc)
    except ValidationError as exc:
        first = exc.errors()[0]
        why = f"{'.'.join(map(str, first['loc'])) or 'the file'}: {first['msg']}"
    except (ValueError, yaml.YAMLError) as exc:  # not JSON, not YAML, not UTF-8
        why = " ".join(str(exc).split())
    else:
        return {**spec.model_dump(), "timezone": spec.timezone or tz}
    raise OrchestratorError("CommandInvalid", f"--file {file}: {why}", field="file")


def _policy_spec(
    file: Path | None,
    at: list[str] | None,
    weekly_on: str | None,
    keep_days: int | None,
    keep_weeks: int | None,
    tz: str,
) -> dict[str, Any]:
    if file is not None:
        return _read_policy_file(file, tz)
    weekdays = [d.strip().lower() for d in weekly_on.split(",")] if weekly_on else []
    retention: dict[str, Any] = {}
    if keep_days is not None:
        retention["daily"] = {"days": keep_days}
    if keep_weeks is not None:
        retention["weekly"] = {"weekdays": weekdays or ["sunday"], "weeks": keep_weeks}
    schedule = {"frequency": "weekly" if weekdays else "daily", "times": at or ["22:30"], "weekdays": weekdays}
    return {"schedule": schedule, "retention": retention, "timezone": tz}


@policy_app.command("create")
def policy_create(
    name: str,
    vault: Vault,
    file: PolicyFileOption = None,
    at: DailyAt = None,
    weekly_on: WeeklyOn = None,
    keep_days: KeepDays = None,
    keep_weeks: KeepWeeks = None,
    tz: TimeZone = "UTC",
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Create a policy (flags for the common cases, --file for monthly and yearly tiers)."""
    spec = _policy_spec(file, at, weekly_on, keep_days, keep_weeks, tz)
    run(
        lambda c: emit(
            {
                "policy_id": c.create_policy(
                    vault_ref(c, vault, subscription), name, spec["schedule"], spec["retention"], spec["timezone"]
                )
            },
            as_json,
        )
    )


@policy_app.command("update")
def policy_update(
    name: str,
    vault: Vault,
    file: PolicyFileOption = None,
    at: DailyAt = None,
    weekly_on: WeeklyOn = None,
    keep_days: KeepDays = None,
    keep_weeks: KeepWeeks = None,
    tz: TimeZone = "UTC",
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Edit a policy; its VMs' recovery points take the new retention."""
    spec = _policy_spec(file, at, weekly_on, keep_days, keep_weeks, tz)
    run(
        lambda c: emit(
            {
                "recovery_points_changed": c.update_policy(
                    vault_ref(c, vault, subscription), name, spec["schedule"], spec["retention"], spec["timezone"]
                )
            },
            as_json,
        )
    )


@policy_app.command("list")
def policy_list(
    vault: Vault, subscription: Subscription = "default", as_json: Json = False, as_of: AsOfTime = None
) -> None:
    """A vault's policies."""
    read(
        as_of,
        lambda c, v: emit(
            v.policies(vault_ref(c, vault, subscription)),
            as_json,
            ("name", "timezone", "schedule", "retention", "item_count"),
        ),
    )


def _jobs(c: Client, job_ids: list[str], wait: bool, as_json: bool) -> None:
    emit(c.wait_all(job_ids) if wait else [c.job(j) for j in job_ids], as_json, (*JOB_COLUMNS, "error_message"))


@app.command()
def protect(
    vm_names: list[str],
    vault: Vault,
    policy: Annotated[str, typer.Option("--policy", "-p")] = "DefaultPolicy",
    subscription: Subscription = "default",
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Protect registered VMs with a policy (one configure-protection job each)."""
    run(lambda c: _jobs(c, c.protect(vault_ref(c, vault, subscription), vm_names, policy), wait, as_json))


@app.command("change-policy")
def change_policy(
    vm_name: str,
    vault: Vault,
    policy: Annotated[str, typer.Option("--policy", "-p")],
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Move a protected VM to another policy."""
    run(
        lambda c: emit(
            {"recovery_points_changed": c.change_policy(vault_ref(c, vault, subscription), vm_name, policy)}, as_json
        )
    )


@app.command("stop-protection")
def stop_protection(
    vm_name: str,
    vault: Vault,
    delete_data: Annotated[bool, typer.Option("--delete-data")] = False,
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Stop backing up a VM, keeping its recovery points (or deleting them: soft deleted first, as the
    vault's soft delete says)."""
    run(lambda c: _jobs(c, [c.stop_protection(vault_ref(c, vault, subscription), vm_name, delete_data)], True, as_json))


@app.command("verify")
def verify(
    vault: Annotated[str | None, typer.Argument(help="The vault (default: every vault).")] = None,
    vm: Annotated[str | None, typer.Option("--vm", help="This VM's points only.")] = None,
    point: Annotated[str | None, typer.Option("--point", help="This recovery point only.")] = None,
    subscription: Subscription = "default",
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Read recovery points back from the vault store and check every block (a job per vault)."""

    def start(c: Client) -> None:
        if vault is None and (vm or point):
            raise OrchestratorError("CommandInvalid", "--vm and --point need the vault", field="vault")
        vaults = [vault_ref(c, vault, subscription)] if vault else [v.vault_id for v in c.vaults(subscription)]
        _jobs(c, [c.verify(v, vm, point) for v in vaults], wait, as_json)

    run(start)


@app.command("undelete")
def undelete(vm_name: str, vault: Vault, subscription: Subscription = "default", as_json: Json = False) -> None:
    """Bring a soft-deleted VM's backup data back (protection stopped, data kept)."""
    run(lambda c: _jobs(c, [c.undelete(vault_ref(c, vault, subscription), vm_name)], True, as_json))


@app.command("backup-now")
def backup_now(
    vm_name: str,
    vault: Vault,
    retain_until: Annotated[datetime | None, typer.Option(help="Keep the point until (UTC).")] = None,
    subscription: Subscription = "default",
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Back up a protected VM now (kept 30 days unless --retain-until)."""
    until = as_utc(retain_until) if retain_until is not None else None
    run(lambda c: _jobs(c, [c.backup_now(vault_ref(c, vault, subscription), vm_name, until)], wait, as_json))


@app.command("recovery-points")
def recovery_points(
    vault: str,
    vm: Annotated[str | None, typer.Option("--vm")] = None,
    include_expired: Annotated[bool, typer.Option("--all", help="Expired points too.")] = False,
    subscription: Subscription = "default",
    as_json: Json = False,
    as_of: AsOfTime = None,
) -> None:
    """Recovery points, newest first."""
    read(
        as_of,
        lambda c, v: emit(
            v.recovery_points(vault_ref(c, vault, subscription), vm, include_expired),
            as_json,
            (
                "recovery_point_id",
                "vm_name",
                "taken_at",
                "consistency",
                "tiers",
                "expires_at",
                "stored_bytes",
                "key_vault",
                "held_reason",
            ),
        ),
    )


@app.command()
def restore(
    recovery_point_id: str,
    target: Annotated[str, typer.Option("--target", help="Name of the new VM.")],
    disks_to: Annotated[
        Path | None, typer.Option("--disks-to", help="Restore only the disks, into DIR/<target>/.")
    ] = None,
    region: Annotated[str | None, typer.Option()] = None,
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Restore a recovery point as a new VM (never replacing one), or its disks into a directory."""
    mode = "disks" if disks_to else "vm"
    where = str(disks_to.absolute()) if disks_to else None  # a relative directory is the operator's, not a worker's
    run(lambda c: _jobs(c, [c.restore(recovery_point_id, target, mode, where, region)], wait, as_json))


@app.command("restore-keys")
def restore_keys(
    recovery_point_id: str,
    key_vault: Annotated[str | None, typer.Option("--key-vault", help="Default: the VM's own.")] = None,
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Put an encrypted VM's BEK secret and KEK key back into its key vault from a recovery point."""
    run(lambda c: _jobs(c, [c.restore_keys(recovery_point_id, key_vault)], wait, as_json))


@key_app.command("generate")
def key_generate() -> None:
    """Print a new random key (BACKUP_VAULT_KEY, BACKUP_KEY_PROTECTION_KEY...; keep it outside the data)."""
    from eventsourcing.cryptography import AESCipher

    typer.echo(AESCipher.create_key(32))


@key_app.command("rewrap")
def key_rewrap(as_json: Json = False) -> None:
    """Rotate BACKUP_VAULT_KEY: rewrap every vault's data key from BACKUP_VAULT_KEY_PREVIOUS (no block is rewritten)."""
    run(lambda c: emit(c.rewrap_vault_keys(), as_json))


@retention_app.command("run")
def retention_run(vault: str, subscription: Subscription = "default", wait: Wait = True, as_json: Json = False) -> None:
    """Expire points past retention and collect their data now."""
    run(lambda c: _jobs(c, [c.run_retention(vault_ref(c, vault, subscription))], wait, as_json))


@schedule_app.command("run")
def schedule_run(as_json: Json = False) -> None:
    """One scheduler pass now: trigger every due backup slot."""
    run(lambda c: emit({"jobs": c.run_scheduler()}, as_json))


@app.command()
def precheck(
    vm_name: str,
    vault: Vault,
    stage: Annotated[str, typer.Option(help="register, protect, backup or restore.")] = "backup",
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Run the prechecks of a stage on a VM now; changes nothing. Exits 1 when one would block."""

    def action(c: Client) -> None:
        results = c.precheck(vault_ref(c, vault, subscription), vm_name, stage)
        emit(results, as_json, ("code", "severity", "message", "remedy"))
        if any(r.severity == "error" for r in results):
            raise typer.Exit(1)

    run(action)


def vault_check(vault: str, subscription: str, as_json: bool) -> None:
    def action(c: Client) -> None:
        report = c.check_vault(vault_ref(c, vault, subscription))
        emit(report, as_json)
        if not report["clean"]:
            raise OrchestratorError(
                "VaultStoreDamaged",
                "; ".join(
                    [
                        f"{len(report['missing'])} missing, {len(report['corrupt'])} corrupt blocks",
                        *(f"manifest {bad['file']} {bad['problem']}" for bad in report["bad_manifests"]),
                    ]
                ),
            )

    run(action)
