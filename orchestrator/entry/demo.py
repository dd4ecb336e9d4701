"""`backupctl demo`: the operator flow on the embedded default, from an empty directory."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator.entry.client import Client
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.local import LocalFabric
from orchestrator.fabric.sample import write_sample_fabric


def _protect_and_back_up(client: Client, vault: str, vms: list[str], out: Console) -> None:
    protections = client.wait_all(client.protect(vault, vms))
    done = [j for j in protections if j.status != "failed"]
    warned = [f"{j.vm_name} ({j.warnings[0]['code']})" for j in done if j.warnings]
    out.print(
        f"[bold]7. Protection[/bold] with DefaultPolicy (daily 22:30 UTC, kept 30 days): "
        f"{len(done)} of {len(vms)} configured" + (f", with warnings: {', '.join(warned)}" if warned else "")
    )
    backups = client.wait_all([client.backup_now(vault, vm) for vm in vms])
    table = Table("VM", "status", "consistency", "logical", "stored", "warning")
    for job in backups:
        result = job.result
        table.add_row(
            job.vm_name,
            job.status,
            result.get("consistency", ""),
            _mib(result.get("logical_bytes", 0)),
            _mib(result.get("stored_bytes", 0)),
            "; ".join(w["code"] for w in job.warnings),
        )
    out.print("[bold]8. Backup now[/bold]: one recovery point each, blocks stored once")
    out.print(table)
    _restore_and_check(client, vault, vms, out)


def _restore_and_check(client: Client, vault: str, vms: list[str], out: Console) -> None:
    source = next(vm for vm in vms if vm.startswith("web"))
    [point] = client.recovery_points(vault, source)
    target = f"{source}-restored-{point.recovery_point_id[:8]}"
    restore = client.wait(client.restore(point.recovery_point_id, target))
    fabric = LocalFabric(client.settings.fabric_path)  # the inventory the workers read, read here too
    restored = fabric.find_vm("default", target)
    key = next(i.vm_key for i in client.protected_items(vault) if i.vm_name == source)
    same = restored is not None and all(
        _sha(path) == _sha(restored.disk_path(disk))
        for (_, path), disk in zip(fabric.disk_paths(key), restored.spec.disks, strict=False)
    )
    out.print(
        f"[bold]9. Restore[/bold] of {source} as new VM {target}: {restore.status}, disks verified, "
        f"byte-for-byte equal to the source: {same}"
    )
    check = client.check_vault(vault)
    out.print(
        f"[bold]10. Vault check[/bold]: {'clean' if check['clean'] else 'DAMAGED'}, "
        f"{len(check['orphans'])} orphan blocks"
    )


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def _sha(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # read in chunks, not whole into memory


def run_demo(directory: Path | None, out: Console) -> None:
    base = directory or Path(tempfile.mkdtemp(prefix="backup-demo-"))
    inventory = base / "fabric" / "inventory.yaml"
    if not inventory.exists():
        write_sample_fabric(inventory.parent)
    out.print(f"[bold]1. Fabric[/bold]: sample inventory at {inventory}")
    with Client(data_dir=base / "data", fabric=inventory) as client:
        vault_name = f"demo-vault-{len(client.vaults()) + 1}"
        vault = client.create_vault(vault_name, "japaneast", "rg-demo")
        out.print(f"[bold]2. Vault[/bold] {vault_name} (japaneast, geo-redundant): {vault}")

        discovery = client.wait(client.discover(vault))
        if discovery.status == "failed":
            raise OrchestratorError(discovery.error_code, discovery.error_message)
        new_vms = discovery.result["new_vms"]
        out.print(f"[bold]3. Discovery[/bold] found {len(new_vms)} new VMs in japaneast: {', '.join(new_vms)}")
        for excluded in discovery.result["excluded"]:
            out.print(f"   not listed: {excluded['vm']} ({excluded['reason']})")

        jobs = client.wait_all(client.register(vault, new_vms))
        out.print("[bold]4. Registration[/bold]: one job per VM")
        table = Table("VM", "status", "error code", "message")
        for job in jobs:
            message = job.error_message or "; ".join(w["message"] for w in job.warnings)
            table.add_row(job.vm_name, job.status, job.error_code, message)
        out.print(table)

        try:
            client.register(vault, [new_vms[0]])
        except OrchestratorError as exc:
            out.print(f"[bold]5. Registering {new_vms[0]} again[/bold] is refused: [{exc.code}] {exc.message}")

        items = client.protected_items(vault)
        out.print(
            f"[bold]6. Vault items[/bold]: {len(items)} registered: "
            + ", ".join(f"{i.vm_name} ({i.status})" for i in items)
        )
        _protect_and_back_up(client, vault, [i.vm_name for i in items], out)
        from orchestrator.entry.cli.audit import render_dashboard

        out.print("[bold]11. Dashboard[/bold]")
        out.print(render_dashboard(client.dashboard(vault)))
        verified = client.audit_verify()
        out.print(
            f"[bold]12. Audit[/bold]: {len(client.history(vault_id=vault))} events of this vault in the history; "
            f"hash chain over {verified.checked} events {'clean' if verified.clean else 'NOT CLEAN'}, "
            f"head {verified.head_position}:{verified.head_hash[:16]}..."
        )
        out.print(
            f"\nData kept in {base}; run more with BACKUP_DATA_DIR={base / 'data'} "
            f"BACKUP_FABRIC={inventory} backupctl jobs"
        )
