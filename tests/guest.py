"""A tiny Linux guest for the agent tests, built from Debian's packages: the kernel of
`linux-image-amd64`, and an initramfs (written here as a newc cpio) with `busybox-static`,
`qemu-guest-agent` and the shared libraries it links to (the host's, from the same release), the
kernel modules for virtio disks, the virtio console and ext4. Its /init mounts the data disk (vda,
formatted ext4 on the host) on /data and starts qemu-ga on the virtio-serial port, with a freeze
hook that logs each freeze and thaw, with the time since boot, to /run/freeze.log (tmpfs: never frozen), and
snapshot scripts /etc/backup/pre.sh and post.sh that log to /run/scripts.log (fail.sh exits 3).

Booted under TCG (no KVM needed) in a few seconds; `GuestVm` waits until the agent answers.
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.qemu import QEMU

PACKAGES = ("linux-image-amd64", "qemu-guest-agent", "busybox-static")
MODULES = ("virtio_pci", "virtio_blk", "virtio_console", "crc32c_generic", "ext4")
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for module in $(cat /modules.order); do insmod /modules/$module.ko; done
mkdir -p /data
for _ in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /data
for _ in $(seq 100); do set -- /dev/vport*p*; [ -c "$1" ] && break; sleep 0.1; done
/usr/sbin/qemu-ga -m virtio-serial -p "$1" -F/etc/fsfreeze-hook -t /run &
echo guest-ready > /dev/ttyS0
while true; do sleep 3600; done
"""
HOOK = """#!/bin/sh
echo "$1 $(cut -d" " -f1 /proc/uptime)" >> /run/freeze.log
"""
SCRIPT = """#!/bin/sh
echo "$(basename "$0" .sh) $(cut -d" " -f1 /proc/uptime)" >> /run/scripts.log
"""


@dataclass
class Guest:
    kernel: Path
    initrd: Path


def build(cache: Path) -> Guest:
    """Download the packages (once per cache) and build the kernel and initramfs."""
    guest = Guest(cache / "vmlinuz", cache / "initrd.gz")
    if guest.kernel.exists() and guest.initrd.exists():
        return guest
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    kernel_package = _kernel_package()
    subprocess.run(
        ["apt-get", "download", "-q", kernel_package, *PACKAGES[1:]], cwd=debs, check=True, capture_output=True
    )
    root = cache / "root"
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    [vmlinuz] = (root / "boot").glob("vmlinuz-*")
    shutil.copy(vmlinuz, guest.kernel)
    files = _initramfs_files(root)
    guest.initrd.write_bytes(gzip.compress(_cpio(files), compresslevel=1))
    shutil.rmtree(root)
    shutil.rmtree(debs)
    return guest


def _kernel_package() -> str:
    """The kernel package linux-image-amd64 depends on (a metapackage has no kernel of its own)."""
    shown = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=True)
    found = re.search(r"Depends: (linux-image-[0-9][^\s]*)", shown.stdout)
    assert found, shown.stdout
    return found.group(1)


def _initramfs_files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the initramfs: {path: (content, mode)}; directories are implied."""
    files: dict[str, tuple[bytes, int]] = {
        "init": (INIT.encode(), 0o755),
        "etc/fsfreeze-hook": (HOOK.encode(), 0o755),
        "etc/backup/pre.sh": (SCRIPT.encode(), 0o755),
        "etc/backup/post.sh": (SCRIPT.encode(), 0o755),
        "etc/backup/fail.sh": (b"#!/bin/sh\necho failing >&2\nexit 3\n", 0o755),
        "bin/busybox": ((root / "bin" / "busybox").read_bytes(), 0o755),
        "usr/sbin/qemu-ga": ((root / "usr" / "sbin" / "qemu-ga").read_bytes(), 0o755),
    }
    linked = subprocess.run(["ldd", str(root / "usr" / "sbin" / "qemu-ga")], capture_output=True, text=True, check=True)
    for library in re.findall(r"(/\S+\.so[.\d]*) \(0x", linked.stdout):
        files[library.lstrip("/")] = (Path(library).read_bytes(), 0o755)
    [modules] = (root / "lib" / "modules").iterdir()
    order = _module_order(modules)
    for name, path in order:
        files[f"modules/{name}.ko"] = (path.read_bytes(), 0o644)
    files["modules.order"] = ("\n".join(name for name, _ in order).encode() + b"\n", 0o644)
    for directory in ("proc", "sys", "dev", "run", "data", "tmp"):
        files[f"{directory}/.keep"] = (b"", 0o644)
    return files


def _module_order(modules: Path) -> list[tuple[str, Path]]:
    """The modules needed, dependencies first (each module's own `depends=` field: the package has
    no modules.dep, which depmod makes as it installs)."""
    paths = {ko.name.removesuffix(".ko").replace("-", "_"): ko for ko in modules.rglob("*.ko")}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        found = re.search(rb"depends=([\w,-]*)\0", paths[name].read_bytes())
        for dep in filter(None, (found.group(1).decode().split(",") if found else [])):
            visit(dep.replace("-", "_"))
        order.append(name)

    for module in MODULES:
        visit(module)
    return [(name, paths[name]) for name in order]


def _cpio(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A newc cpio archive of the files (with their parent directories)."""
    out = io.BytesIO()
    directories = sorted({str(Path(p).parents[i]) for p in files for i in range(len(Path(p).parents) - 1)})
    entries = [(d, b"", 0o040755) for d in directories] + [(p, c, 0o100000 | m) for p, (c, m) in sorted(files.items())]
    for index, (name, content, mode) in enumerate([*entries, ("TRAILER!!!", b"", 0)], start=1):
        encoded = name.encode() + b"\0"
        fields = [index, mode, 0, 0, 1, 0, len(content), 0, 0, 0, 0, len(encoded), 0]
        out.write(b"070701" + b"".join(f"{v:08x}".encode() for v in fields))
        out.write(encoded + b"\0" * (-(110 + len(encoded)) % 4))
        out.write(content + b"\0" * (-len(content) % 4))
    return out.getvalue()


def data_disk(path: Path, mib: int) -> None:
    """A raw image formatted ext4 (its content: a file the tests can look for)."""
    with path.open("wb") as f:
        f.truncate(mib * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)


class GuestVm:
    """A booted guest: data disk vda, the agent's channel at `qga`, the console logged to `console`."""

    def __init__(self, guest: Guest, disk: Path, sockets: Path) -> None:
        self.qmp, self.qga, self.console = sockets / "vm.qmp", sockets / "vm.qga", sockets / "console.log"
        self.disk = disk
        command = [QEMU, "-nodefaults", "-display", "none", "-machine", "accel=tcg", "-m", "256"]
        command += ["-kernel", str(guest.kernel), "-initrd", str(guest.initrd), "-append", "console=ttyS0 quiet"]
        command += ["-serial", f"file:{self.console}", "-qmp", f"unix:{self.qmp},server=on,wait=off"]
        command += ["-drive", f"file={disk},format=raw,if=none,id=data0", "-device", "virtio-blk-pci,drive=data0"]
        command += ["-device", "virtio-serial-pci", "-chardev", f"socket,path={self.qga},server=on,wait=off,id=qga0"]
        command += ["-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while b"guest-ready" not in (self.console.read_bytes() if self.console.exists() else b""):
            if self.process.poll() is not None or time.monotonic() > deadline:
                console = self.console.read_text(errors="replace") if self.console.exists() else ""
                raise RuntimeError(f"the guest did not boot: {console[-3000:]}")
            time.sleep(0.2)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    @staticmethod
    def environment_ok() -> bool:
        return all(shutil.which(tool) for tool in ("apt-get", "apt-cache", "dpkg-deb", "mkfs.ext4", "ldd"))
