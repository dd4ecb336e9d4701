"""Checks a VM must pass to be registered: the VM agent, then the backup extension."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.fabric.inventory import FabricVm, PowerState

MIN_WINDOWS_AGENT = (2, 6, 1198, 718)


@dataclass(frozen=True)
class CheckFailure:
    code: str
    message: str


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def agent_problem(vm: FabricVm) -> CheckFailure | None:
    """The VM agent must be installed, recent enough on Windows, and ready if the VM runs."""
    agent, name = vm.spec.agent, vm.ref.display_name
    windows = vm.spec.os.type == "windows"
    if not agent.installed:
        how = (
            "download and run the Azure VM agent installer (MSI) on the VM"
            if windows
            else "install the Linux agent package (walinuxagent / WALinuxAgent) on the VM"
        )
        return CheckFailure(
            "VmAgentNotInstalled",
            f"The VM agent is not installed on VM {name}. To fix: {how}, check that it reports "
            "ready, then register the VM again.",
        )
    if windows and _version(agent.version) < MIN_WINDOWS_AGENT:
        return CheckFailure(
            "VmAgentVersionTooOld",
            f"VM {name} runs VM agent {agent.version}; backup needs "
            f"{'.'.join(map(str, MIN_WINDOWS_AGENT))} or later. Update the agent, then register "
            "the VM again.",
        )
    if agent.updating:
        return CheckFailure(
            "VmAgentUpdating",
            f"The VM agent on VM {name} is being updated. Wait for the update to finish, then "
            "register the VM again.",
        )
    if vm.spec.power_state is PowerState.RUNNING and not agent.ready:
        service = "WindowsAzureGuestAgent" if windows else "waagent"
        return CheckFailure(
            "VmAgentNotReady",
            f"The VM agent on VM {name} is installed but not ready. Restart the {service} "
            "service on the VM, check its outbound connectivity, then register the VM again.",
        )
    return None
