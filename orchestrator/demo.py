"""`backupctl demo`: the operator flow on the embedded default, from an empty directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator.client import Client
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.sample import write_sample_fabric


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
        out.print(f"[bold]6. Vault items[/bold]: {len(items)} registered: "
                  + ", ".join(f"{i.vm_name} ({i.status})" for i in items))
        out.print(f"\nData kept in {base}; run more with BACKUP_DATA_DIR={base / 'data'} "
                  f"BACKUP_FABRIC={inventory} backupctl jobs")
