"""`backupctl server` (the API service) and `backupctl identity` (who may call it)."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.entry.cli.common import Json, Subscription, app, emit, out, refuse, run, vault_ref
from orchestrator.entry.client import Client
from orchestrator.errors import OrchestratorError

identity_app = typer.Typer(no_args_is_help=True, help="Identities of the API service, their roles and tokens.")
app.add_typer(identity_app, name="identity")
IDENTITY_COLUMNS = ("name", "role", "vault_id", "revoked", "created_at", "created_by")


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8421,
) -> None:
    """Serve the client contract over HTTP (OpenAPI at /openapi.json). On the embedded default this
    process owns the data dir and runs every service: scheduled backups run while it does."""
    from orchestrator.entry.api.server import serve

    try:
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
    role: Annotated[str, typer.Option(help="reader, operator, contributor or owner.")],
    vault: Annotated[str | None, typer.Option(help="Hold the role on this vault only (default: every vault).")] = None,
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Make an identity and print its API token, this once (only its hash is kept). Without
    BACKUP_URL this acts on the data dir directly: that is how the first owner is made."""

    def create(client: Client) -> None:
        vault_id = vault_ref(client, vault, subscription) if vault else None
        token = client.create_identity(name, role, vault_id)
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
