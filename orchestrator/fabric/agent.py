"""qemu-guest-agent, standing for Azure's VM agent on the QEMU fabric.

Its facts, as the precheck catalogue reads them: installed (the VM has a guest-agent channel),
ready (`guest-ping` answers within the agent timeout), its version (`guest-info`), and whether it
can freeze the guest's file systems (`guest-fsfreeze-freeze` among its enabled commands).

The freeze around a capture's instant (`frozen`): the VM's pre-snapshot script run in the guest
(`guest-exec`), `guest-fsfreeze-freeze`, the caller's step (the QMP transaction that fixes the
copy), `guest-fsfreeze-thaw`, the post-snapshot script. The thaw is sent in every path, and a
watchdog thread sends it when the step has not ended within the freeze timeout: a guest is never
held frozen longer than that (a QGA socket serves one client at a time, so the freeze and the thaw
each hold it only for their own command). What it gives the point:
- frozen, the step ended in time, the scripts (if any) succeeded: application-consistent;
- the freeze failed, timed out, or a script failed (when the VM says to go on): file-system
  consistent, with a warning saying which;
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.domain.values import Consistency, Finding
from orchestrator.errors import OrchestratorError
from orchestrator.fabric import Capture
from orchestrator.fabric.inventory import FabricVm
from orchestrator.fabric.qmp import Monitor, QemuError


@dataclass(frozen=True)
class AgentSettings:
    timeout: float = 5.0  # seconds qemu-guest-agent has to answer
    minimum: str = "2.5"  # the oldest version trusted to freeze
    freeze_timeout: float = 10.0  # the longest a guest stays frozen


@dataclass(frozen=True)
class AgentFacts:
    installed: bool
    ready: bool = False
    version: str = ""
    can_freeze: bool = False


def probe(socket: Path | None, timeout: float) -> AgentFacts:
    """What the VM's guest agent says of itself now."""
    if socket is None:
        return AgentFacts(installed=False)
    if not socket.exists():
        return AgentFacts(installed=True)
    try:
        with Monitor(socket, timeout, guest_agent=True) as qga:
            qga.execute("guest-ping")
            info = qga.execute("guest-info")
    except QemuError:
        return AgentFacts(installed=True)
    enabled = {c["name"] for c in info.get("supported_commands", []) if c.get("enabled")}
    return AgentFacts(
        installed=True,
        ready=True,
        version=str(info.get("version", "")),
        can_freeze={"guest-fsfreeze-freeze", "guest-fsfreeze-thaw"} <= enabled,
    )


def run_in_guest(socket: Path, path: Path, timeout: float) -> tuple[bool, str]:
    """Run a program in the guest (`guest-exec`); (True, "") when it exits 0 within `timeout`."""
    try:
        with Monitor(socket, timeout, guest_agent=True) as qga:
            pid = qga.execute("guest-exec", {"path": str(path), "capture-output": True})["pid"]
            deadline = time.monotonic() + timeout
            while True:
                status = qga.execute("guest-exec-status", {"pid": pid})
                if status.get("exited"):
                    break
                if time.monotonic() > deadline:
                    return False, f"{path.name} did not finish within {timeout:g}s"
                time.sleep(0.05)
    except QemuError as exc:
        return False, f"{path.name} could not run through qemu-guest-agent ({exc.message})"
    if status.get("exitcode", 1) != 0:
        err = base64.b64decode(status.get("err-data", "")).decode(errors="replace").strip()[:200]
        return False, f"{path.name} exited {status.get('exitcode', status.get('signal'))}: {err}"
    return True, ""


class _Thaw:
    """The thaw, sent once (by the capture or by the watchdog, whichever comes first)."""

    def __init__(self, socket: Path, timeout: float) -> None:
        self.socket, self.timeout = socket, timeout
        self.lock = threading.Lock()
        self.sent = False
        self.by_watchdog = False
        self.error = ""

    def __call__(self, by_watchdog: bool = False) -> None:
        with self.lock:
            if self.sent:
                return
            self.sent, self.by_watchdog = True, by_watchdog
            for _ in range(3):  # the agent may still be finishing the freeze: it answers the thaw after
                try:
                    with Monitor(self.socket, self.timeout, guest_agent=True) as qga:
                        qga.execute("guest-fsfreeze-thaw")
                    self.error = ""
                    return
                except QemuError as exc:
                    self.error = exc.message


@contextmanager
def frozen(vm: FabricVm, socket: Path, capture: Capture, freeze_timeout: float, timeout: float) -> Iterator[None]:
    """Quiesce the guest for the block (the capture's instant); sets the capture's consistency and
    adds its warnings. Raises `PreSnapshotScriptFailed` when the pre-snapshot script fails and the
    VM's setting is to fail the backup."""
    name, spec = vm.ref.display_name, vm.spec.freeze
    scripts_ok = _pre_script(vm, socket, capture, timeout)
    thaw = _Thaw(socket, timeout)
    watchdog = threading.Timer(freeze_timeout, thaw, kwargs={"by_watchdog": True})
    frozen_ok = False
    try:
        try:
            with Monitor(socket, min(timeout, freeze_timeout), guest_agent=True) as qga:
                watchdog.start()  # from the freeze's first moment
                qga.execute("guest-fsfreeze-freeze")
            frozen_ok = True
        except QemuError as exc:
            capture.warnings.append(
                Finding(
                    code="GuestFreezeFailed",
                    message=(
                        f"qemu-guest-agent could not freeze the file systems of VM {name} ({exc.message}): the "
                        "point is file-system consistent"
                    ),
                )
            )
        yield
    finally:
        watchdog.cancel()
        thaw()
        if thaw.error:
            capture.warnings.append(
                Finding(
                    code="GuestThawFailed",
                    message=f"qemu-guest-agent did not confirm the thaw of VM {name}: {thaw.error}; check the guest",
                )
            )
        if thaw.by_watchdog:
            frozen_ok = False
            capture.warnings.append(
                Finding(
                    code="GuestFreezeTimedOut",
                    message=(
                        f"the file systems of VM {name} were thawed after {freeze_timeout:g}s "
                        "(BACKUP_QEMU_FREEZE_TIMEOUT), before the copy was fixed: the point is file-system "
                        "consistent"
                    ),
                )
            )
        if spec.post_script is not None:
            ok, why = run_in_guest(socket, spec.post_script, spec.script_timeout_s)
            if not ok:
                capture.warnings.append(
                    Finding(
                        code="PostSnapshotScriptFailed",
                        message=f"the post-snapshot script on VM {name} failed ({why}); check the VM's applications",
                    )
                )
        good = frozen_ok and scripts_ok
        capture.consistency = Consistency.APPLICATION if good else Consistency.FILE_SYSTEM


def _pre_script(vm: FabricVm, socket: Path, capture: Capture, timeout: float) -> bool:
    spec, name = vm.spec.freeze, vm.ref.display_name
    if spec.pre_script is None:
        return True
    ok, why = run_in_guest(socket, spec.pre_script, spec.script_timeout_s)
    if ok:
        return True
    if spec.on_script_failure == "fail":
        raise OrchestratorError(
            "PreSnapshotScriptFailed",
            (
                f"the pre-snapshot script on VM {name} failed ({why}) and the VM's setting is to fail the backup; "
                "fix the script or set on_script_failure: continue"
            ),
        )
    capture.warnings.append(
        Finding(
            code="PreSnapshotScriptFailed",
            message=f"the pre-snapshot script on VM {name} failed ({why}); the point is file-system consistent",
        )
    )
    return False


def check_minimum(version: str, minimum: str) -> bool:
    def parts(text: str) -> tuple[int, ...]:
        found = []
        for part in text.split("."):
            digits = "".join(ch for ch in part if ch.isdigit())
            found.append(int(digits) if digits else 0)
        return tuple(found)

    return parts(version) >= parts(minimum)
