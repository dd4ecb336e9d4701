"""`backupctl server` (the API service), `backupctl identity` (who may call it) and `backupctl guard`
(resource guards: multi-user authorization of vaults' critical operations)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.entry.cli.common import Json, Subscription, app, emit, out, refuse, run, vault_ref
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.entry.client import Client

identity_app = typer.Typer(no_args_is_help=True, help="Identities of the API service, their roles and tokens.")
app.add_typer(identity_app, name="identity")
IDENTITY_COLUMNS = ("name", "role", "vault_id", "guard_id", "revoked", "created_at", "created_by")
guard_app = typer.Typer(no_args_is_help=True, help="Resource guards: a second identity approves critical operations.")
app.add_typer(guard_app, name="guard")
APPROVAL_COLUMNS = ("approval_id", "operation", "vault_id", "approved_by", "expires_at", "state", "used_by")
DURATION = re.compile(r"(\d+)([mhd]?)")


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8421,
) -> None:
    """Serve the client contract over HTTP (OpenAPI at /openapi.json). On the embedded default this
    process owns the data dir and runs every service: scheduled backups run while it does."""
    from orchestrator.entry.api.server import serve

    try:
        from orchestrator.entry.client import Client

        with Client() as client:
            if client.settings.url is not None:
                raise OrchestratorError(
                    "SettingInvalid", "BACKUP_URL names a service to call: unset it to run one", field="BACKUP_URL"
                )
            tls = client.settings.tls_cert_file, client.settings.tls_key_file
            if (tls[0] is None) != (tls[1] is None):
                raise OrchestratorError(
                    "SettingInvalid", "TLS needs both BACKUP_TLS_CERT_FILE and BACKUP_TLS_KEY_FILE", field="tls"
                )
            serve(client, host, port, certfile=str(tls[0]) if tls[0] else None, keyfile=str(tls[1]) if tls[1] else None)
    except OrchestratorError as exc:
        raise typer.Exit(refuse(exc)) from None


@identity_app.command("create")
def identity_create(
    name: str,
    role: Annotated[str, typer.Option(help="reader, operator, contributor, owner, or guard_admin.")],
    vault: Annotated[str | None, typer.Option(help="Hold the role on this vault only (default: every vault).")] = None,
    guard: Annotated[str | None, typer.Option(help="guard_admin: on this resource guard only (default: all).")] = None,
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Make an identity and print its API token, this once (only its hash is kept). Without
    BACKUP_URL this acts on the data dir directly: that is how the first owner is made, and the
    only way guard admins are."""

    def create(client: Client) -> None:
        vault_id = vault_ref(client, vault, subscription) if vault else None
        token = client.create_identity(name, role, vault_id, guard)
        if as_json:
            emit({"name": name, "token": token}, True)
        else:
            out.print(f"identity {name} ({role}); its token, shown this once:")
            out.print(token, markup=False, highlight=False, soft_wrap=True)

    run(create, services=False)


@identity_app.command("list")
def identity_list(as_json: Json = False) -> None:
    """Every identity, revoked ones too (never a token)."""
    run(lambda c: emit(c.identities(), as_json, IDENTITY_COLUMNS), services=False)


@identity_app.command("revoke")
def identity_revoke(name: str) -> None:
    """Revoke an identity: its token is refused from the next call on."""
    run(lambda c: c.revoke_identity(name), services=False)
    out.print(f"identity {name} revoked")


def minutes_of(text: str) -> int:
    """A duration as `30m`, `1h`, `1d` or a number of minutes, in minutes."""
    found = DURATION.fullmatch(text.strip())
    if found is None:
        raise OrchestratorError(
            "CommandInvalid", f"--for {text[:40]!r}: give minutes (90), or 30m, 2h, 1d", field="minutes"
        )
    return int(found[1]) * {"": 1, "m": 1, "h": 60, "d": 24 * 60}[found[2]]


@guard_app.command("create")
def guard_create(name: str) -> None:
    """Make a resource guard; attach it to vaults, and make its guard admins (with local access)."""
    run(lambda c: out.print(f"resource guard {name}: {c.create_guard(name)}"), services=False)


@guard_app.command("attach")
def guard_attach(
    guard: str, vault: Annotated[str, typer.Option("--vault", "-v")], subscription: Subscription = "default"
) -> None:
    """Protect a vault's critical operations with the guard."""
    run(lambda c: c.attach_guard(vault_ref(c, vault, subscription), guard), services=False)


@guard_app.command("detach")
def guard_detach(vault: Annotated[str, typer.Option("--vault", "-v")], subscription: Subscription = "default") -> None:
    """Detach a vault's guard (a critical operation: it needs an approval of detach_guard)."""
    run(lambda c: c.detach_guard(vault_ref(c, vault, subscription)), services=False)


@guard_app.command("approve")
def guard_approve(
    guard: str,
    vault: Annotated[str, typer.Option("--vault", "-v")],
    operation: Annotated[
        str,
        typer.Option(help="disable_soft_delete, shorten_retention, delete_data, detach_guard or disable_immutability."),
    ],
    valid_for: Annotated[str, typer.Option("--for", help="How long it may be used: 30m, 1h (default), 1d.")] = "1h",
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """As a guard admin, approve one critical operation on a vault, once, for another identity to
    use: over the API with a guard_admin identity's BACKUP_TOKEN (or locally, BACKUP_PRINCIPAL set to
    that identity's name)."""

    def approve(client: Client) -> None:
        minutes = minutes_of(valid_for)
        approval = client.approve_operation(guard, vault_ref(client, vault, subscription), operation, minutes)
        if as_json:
            emit({"approval_id": approval, "operation": operation, "minutes": minutes}, True)
        else:
            out.print(f"approved {operation} on {vault} once, for {minutes} minutes: approval {approval}")

    run(approve, services=False)


@guard_app.command("list")
def guard_list(as_json: Json = False) -> None:
    """Every resource guard."""
    run(lambda c: emit(c.guards(), as_json, ("name", "guard_id", "created_at", "created_by")))


@guard_app.command("approvals")
def guard_approvals(
    guard: str, state: Annotated[str | None, typer.Option(help="open, used or expired.")] = None, as_json: Json = False
) -> None:
    """A guard's approvals, newest first."""
    run(lambda c: emit(c.approvals(guard, state), as_json, APPROVAL_COLUMNS))
