"""Where a restore may write: an absolute directory that is none of the deployment's own (the data
dir, the vault store, the fabric's directory and its disk images' roots), none of their parents, and
not under the kernel's /proc, /sys or /dev. Checked when the command is given (nothing is stored for
a refusal) and again by the worker, with its own settings, before it writes anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orchestrator import safefs
from orchestrator.config import Settings
from orchestrator.errors import DomainError


def product_dirs(settings: Settings) -> list[Path]:
    """The directories the deployment owns, as they really are (links resolved)."""
    own = [settings.data_dir, settings.vault_store_path, settings.fabric_path.parent, *settings.image_roots_for()]
    return sorted({Path(os.path.realpath(path)) for path in own})


def check_target_dir(text: str, own: list[Path]) -> Path:
    """The target directory, resolved; `TargetDirInvalid` or `TargetDirForbidden` saying why not."""
    if "\0" in text or any(ord(ch) < 32 for ch in text):
        raise _invalid(text, "control", "contains a control character")
    path = Path(text)
    if not path.is_absolute():
        raise _invalid(text, "absolute", "must be an absolute path (a relative one would be the worker's)")
    real = Path(os.path.realpath(path))
    for system in safefs.KERNEL_DIRS:
        if safefs.within(real, system):
            raise _forbidden(text, real, f"is under {system}, the kernel's")
    for mine in own:
        if safefs.within(real, mine):
            raise _forbidden(text, real, f"is inside {mine}, one of the deployment's own directories")
        if safefs.within(mine, real):
            raise _forbidden(text, real, f"holds {mine}, one of the deployment's own directories")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real  # made by the restore
    except OSError as exc:
        raise _invalid(text, "unreadable", f"cannot be looked at ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _invalid(text, "not_a_directory", "exists and is not a directory")
    return real


def _invalid(text: str, rule: str, why: str) -> DomainError:
    return DomainError(
        "TargetDirInvalid", f"target directory {text[:200]!r} {why}", field="target_dir", details=[{"rule": rule}]
    )


def _forbidden(text: str, real: Path, why: str) -> DomainError:
    shown = f"{text[:200]!r}" + (f" ({real})" if str(real) != text else "")
    return DomainError(
        "TargetDirForbidden",
        f"target directory {shown} {why}: restore elsewhere",
        field="target_dir",
        details=[{"rule": "forbidden"}],
    )
