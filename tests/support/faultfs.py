"""Real filesystem faults on this machine without touching its filesystems.

A tiny tmpfs mounted in a private mount namespace: only the code started inside sees it, and it
disappears with the last process in the namespace, so nothing outside can be filled up or made
read-only and nothing needs cleaning up by hand. The faults are the kernel's own: ENOSPC from a
full tmpfs, EROFS from a read-only remount.

Two ways in:
- `in_private_tmpfs(fn)`: fork, enter a new mount namespace, mount the tmpfs, call fn(dir) there
  and hand its (picklable) result back; for tests of code that runs in the test process.
- `TmpfsNamespace`: start real processes (the daemon, the web page) inside the namespace, then
  fill the tmpfs, remount it read-only, read its files, all from outside via nsenter and /proc.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_REMOUNT, _MS_REC, _MS_PRIVATE = 0x1, 0x20, 0x4000, 0x40000


def unavailable() -> str | None:
    """Why the fault tests cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root (mounts a tmpfs in a private mount namespace)"
    missing = [tool for tool in ("unshare", "nsenter", "mount") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian package util-linux)"
    return None


def _libc_call(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _mount(source: bytes | None, target: str, fstype: bytes | None, flags: int,
           data: bytes | None) -> None:
    _libc_call("mount", source, target.encode(), fstype, ctypes.c_ulong(flags), data)


def mount_tmpfs(directory: Path, size: str) -> None:
    """Mount another tmpfs at `directory` (inside in_private_tmpfs: two filesystems, one full)."""
    _mount(b"blurcam-test", str(directory), b"tmpfs", 0, f"size={size},mode=0755".encode())


def remount(directory: Path, read_only: bool) -> None:
    """Remount the tmpfs at `directory` read-only or read-write (inside its namespace)."""
    _mount(None, str(directory), None, _MS_REMOUNT | (_MS_RDONLY if read_only else 0), None)


def fill(directory: Path, name: str = "filler") -> int:
    """Write zeros to `directory/name` until the filesystem is full. Returns the bytes written."""
    written = 0
    block = b"\0" * 4096
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                written += os.write(fd, block)
            except OSError:
                break
        # A last partial page may still fit.
        for size in (2048, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1):
            try:
                written += os.write(fd, block[:size])
            except OSError:
                continue
    finally:
        os.close(fd)
    return written


def in_private_tmpfs(fn: Callable[[Path], Any], size: str = "256k") -> Any:
    """Run fn(directory) in a forked child, with a fresh tmpfs of `size` mounted at `directory`
    in a mount namespace of its own. Returns fn's result; an exception in fn is raised here."""
    read_end, write_end = os.pipe()
    mountpoint = Path(tempfile.mkdtemp(prefix="blurcam-faultfs-"))
    pid = os.fork()
    if pid == 0:  # the child: its own mounts, gone when it exits
        os.close(read_end)
        try:
            _libc_call("unshare", _CLONE_NEWNS)
            _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)  # nothing leaks back out
            mount_tmpfs(mountpoint, size)
            outcome = ("ok", fn(mountpoint))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            outcome = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(pickle.dumps(outcome))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    mountpoint.rmdir()  # empty here: the tmpfs only ever existed in the child's namespace
    if not data:
        raise RuntimeError("the fault-injection child died without a result")
    status, value = pickle.loads(data)
    if status == "error":
        raise AssertionError(f"in the private tmpfs: {value}")
    return value


class TmpfsNamespace:
    """Processes started by `start` run in a private mount namespace in which `mountpoint`
    (an empty directory of ours) is a tmpfs of `size`."""

    def __init__(self, mountpoint: Path, size: str = "1m"):
        self.mountpoint = Path(mountpoint)
        self.size = size
        self.pid: int | None = None

    def start(self, command: Sequence[str], **popen_kwargs) -> subprocess.Popen:
        script = (f'mount -t tmpfs -o size={self.size},mode=0755 blurcam-test "{self.mountpoint}"'
                  ' && exec "$@"')
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                                 "sh", "-c", script, "sh", *command], **popen_kwargs)
        self.pid = proc.pid  # sh execs the command: same pid, inside the namespace
        return proc

    def run(self, command: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (it sees the tmpfs)."""
        assert self.pid is not None, "start a process first"
        return subprocess.run(["nsenter", f"--target={self.pid}", "--mount", "--", *command],
                              capture_output=True, text=True, **kwargs)

    def path(self, relative: str) -> Path:
        """A file on the tmpfs, as seen from outside through the namespace's first process."""
        return Path(f"/proc/{self.pid}/root") / self.mountpoint.relative_to("/") / relative

    def fill(self) -> None:
        self.run(["sh", "-c", f'cat /dev/zero > "{self.mountpoint}/filler" 2>/dev/null; true'])

    def unfill(self) -> None:
        self.run(["rm", "-f", f"{self.mountpoint}/filler"])

    def read_only(self, on: bool = True) -> None:
        result = self.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(self.mountpoint)])
        if result.returncode != 0:
            raise RuntimeError(f"remount failed: {result.stderr.strip()}")
