"""How consistent a snapshot is: the agent quiesces writes (VSS on Windows, the VM's pre- and
post-snapshot scripts on Linux); a stopped VM is backed up offline, crash-consistent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from orchestrator.domain.values import Consistency, Finding
from orchestrator.errors import OrchestratorError
from orchestrator.fabric import Fabric
from orchestrator.fabric.inventory import FabricVm, PowerState


@dataclass
class Freeze:
    consistency: Consistency = Consistency.CRASH
    warnings: list[Finding] = field(default_factory=list)


@contextmanager
def frozen(fabric: Fabric, vm: FabricVm) -> Iterator[Freeze]:
    """Quiesce the VM for the duration of the block (the local fabric has no copy-on-write
    snapshots, so the freeze spans the read of the disks)."""
    result = Freeze()
    spec, name = vm.spec, vm.ref.display_name
    if spec.power_state is not PowerState.RUNNING:
        yield result  # offline backup: crash-consistent, no agent involved
        return
    if spec.os.type == "windows":
        if spec.freeze.vss_ok:
            result.consistency = Consistency.APPLICATION
        else:
            result.consistency = Consistency.FILE_SYSTEM
            result.warnings.append(
                Finding(
                    code="VssFreezeFailed",
                    message=(
                        f"VSS could not freeze applications on VM {name}: the recovery point is file-system "
                        "consistent. Check the VSS writers' state (vssadmin list writers) on the VM."
                    ),
                )
            )
        yield result
        return
    yield from _linux(fabric, vm, result)


def _linux(fabric: Fabric, vm: FabricVm, result: Freeze) -> Iterator[Freeze]:
    """Application-consistent when the pre-snapshot script ran and succeeded; the post-snapshot
    script runs after the snapshot whatever happened before it."""
    freeze, name = vm.spec.freeze, vm.ref.display_name
    result.consistency = Consistency.FILE_SYSTEM
    if freeze.pre_script is not None:
        ok, why = fabric.run_script(vm, freeze.pre_script, freeze.script_timeout_s)
        if not ok and freeze.on_script_failure == "fail":
            raise OrchestratorError(
                "PreSnapshotScriptFailed",
                (
                    f"the pre-snapshot script on VM {name} failed ({why}) and the VM's setting is to fail "
                    "the backup; fix the script or set on_script_failure: continue"
                ),
            )
        if ok:
            result.consistency = Consistency.APPLICATION
        else:
            result.warnings.append(
                Finding(
                    code="PreSnapshotScriptFailed",
                    message=(
                        f"the pre-snapshot script on VM {name} failed ({why}); the recovery point is "
                        "file-system consistent"
                    ),
                )
            )
    try:
        yield result
    finally:
        if freeze.post_script is not None:
            ok, why = fabric.run_script(vm, freeze.post_script, freeze.script_timeout_s)
            if not ok:
                result.warnings.append(
                    Finding(
                        code="PostSnapshotScriptFailed",
                        message=(f"the post-snapshot script on VM {name} failed ({why}); check the VM's applications"),
                    )
                )
