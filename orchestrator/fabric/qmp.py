"""A QEMU monitor (QMP) session, synchronous, over the `qemu.qmp` library's public client.

Each session runs its own event loop in the calling thread, so any worker thread may hold one. A
QMP socket serves one client at a time: sessions are kept short (one backup step, one fact query),
and a connection that does not answer within `timeout` seconds raises `QemuUnreachable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from qemu.qmp import ExecuteError, QMPClient, QMPError

from orchestrator.errors import OrchestratorError


class QemuError(OrchestratorError):
    """QEMU refused a command (`QemuCommandFailed`) or its monitor did not answer (`QemuUnreachable`)."""


class Monitor:
    """`guest_agent`: the socket is a qemu-guest-agent channel's (the same protocol, without QMP's
    greeting and capabilities negotiation)."""

    def __init__(self, socket: Path, timeout: float = 10.0, name: str = "", *, guest_agent: bool = False) -> None:
        self.socket, self.timeout, self.name = socket, timeout, name or socket.name
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(self.name)
        if guest_agent:
            self._client.await_greeting = False
            self._client.negotiate = False

    def __enter__(self) -> Monitor:
        try:
            self._run(self._client.connect(str(self.socket)))
        except (OSError, EOFError, QMPError, TimeoutError) as exc:
            self._loop.close()
            raise QemuError(
                "QemuUnreachable", f"QEMU's monitor at {self.socket} does not answer ({_why(exc)})"
            ) from None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self._run(self._client.disconnect())
        except (OSError, EOFError, QMPError, TimeoutError):
            pass  # the session ends either way; QEMU drops a client whose socket closes
        finally:
            self._loop.close()

    def execute(self, command: str, arguments: Mapping[str, object] | None = None) -> Any:
        """Run one QMP command; its return value. `QemuCommandFailed` names the command and QEMU's reason."""
        try:
            return self._run(self._client.execute(command, dict(arguments or {})))
        except ExecuteError as exc:
            raise QemuError("QemuCommandFailed", f"QEMU at {self.socket} refused {command}: {exc}") from None
        except (OSError, EOFError, QMPError, TimeoutError) as exc:
            raise QemuError(
                "QemuUnreachable", f"QEMU's monitor at {self.socket} stopped answering {command} ({_why(exc)})"
            ) from None

    def _run(self, step: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(step, self.timeout))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
