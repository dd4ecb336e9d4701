"""The one way the product writes files: no link followed, nothing existing replaced, 0600 / 0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator import safefs


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_write_new_never_replaces_a_file_or_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "file").write_bytes(b"old")
    (tmp_path / "link").symlink_to(victim)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for name in ("file", "link", "dangling"):
        assert safefs.write_new(tmp_path / name, b"new") is False
    assert victim.read_bytes() == b"keep" and (tmp_path / "file").read_bytes() == b"old"
    assert not (tmp_path / "nowhere").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_write_new_makes_a_private_file(tmp_path: Path) -> None:
    assert safefs.write_new(tmp_path / "new", b"data") is True
    assert (tmp_path / "new").read_bytes() == b"data" and mode(tmp_path / "new") == 0o600


def test_create_refuses_a_planted_link(tmp_path: Path) -> None:
    (tmp_path / "x").symlink_to(tmp_path / "target")
    with pytest.raises(FileExistsError):
        safefs.create(tmp_path / "x")
    assert not (tmp_path / "target").exists()


def test_write_replacing_replaces_a_link_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "state").symlink_to(victim)
    safefs.write_replacing(tmp_path / "state", b"state")
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "state").is_symlink() and (tmp_path / "state").read_bytes() == b"state"
    assert mode(tmp_path / "state") == 0o600


def test_make_dirs_are_private_and_refuse_a_link(tmp_path: Path) -> None:
    made = safefs.make_dirs(tmp_path / "a" / "b")
    assert mode(made) == 0o700 and mode(tmp_path / "a") == 0o700
    (tmp_path / "l").symlink_to(tmp_path / "a")
    with pytest.raises(safefs.UnsafePathError):
        safefs.make_dirs(tmp_path / "l")


def test_tighten_leaves_a_link_and_its_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_bytes(b"")
    target.chmod(0o644)
    (tmp_path / "l").symlink_to(target)
    safefs.tighten(tmp_path / "l", 0o600)
    assert mode(target) == 0o644
    safefs.tighten(target, 0o600)
    assert mode(target) == 0o600
