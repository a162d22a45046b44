"""Files that must survive a power cut: atomic replacement, plain-words errors, stale temp clean-up.

Every file the daemon or the web process keeps (settings, backgrounds, password hash, session key)
is written here, so one rule holds for all of them: a write either lands whole (and survives a
power cut once it was reported saved) or fails with a StorageError and leaves the old file as it
was. Nothing is ever written in place.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Our temp files are named .<target>.tmp-XXXXXXXX beside the file they will replace.
TEMP_MARK = ".tmp-"

_REASONS = {
    errno.ENOSPC: "the device's storage is full",
    errno.EDQUOT: "the device's storage is full",
    errno.EROFS: "the device's storage is read-only",
    errno.EIO: "the device's storage failed to write (the SD card may be failing)",
    errno.EACCES: "the service may not write to its data folder",
    errno.EPERM: "the service may not write to its data folder",
    errno.ENOENT: "its data folder is missing",
}


class StorageError(Exception):
    """Something could not be saved. The message is a plain sentence without paths, e.g.
    "Settings not saved: the device's storage is full. Nothing was changed." (the previous
    version stays on disk and in use)."""

    def __init__(self, what: str, reason: str, errno_: int | None = None):
        self.what, self.reason, self.errno = what, reason, errno_
        super().__init__(f"{what[:1].upper()}{what[1:]} not saved: {reason}. Nothing was changed.")

    @classmethod
    def from_os_error(cls, what: str, exc: OSError) -> StorageError:
        return cls(what, plain_reason(exc), exc.errno)

    @classmethod
    def from_reply(cls, reply: dict) -> StorageError:
        """Rebuild the daemon's error from its control-socket reply."""
        errno_ = reply.get("errno")
        return cls(str(reply.get("what") or "change"), str(reply.get("reason") or "unknown"),
                   errno_ if isinstance(errno_, int) else None)


def plain_reason(exc: OSError) -> str:
    """Why a write failed, in words an owner can act on (no path, no errno number)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return (exc.strerror or type(exc).__name__).lower()


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` itself durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, what: str = "the file", mode: int | None = 0o600,
                     owner_of: Path | None = None) -> None:
    """Replace `path` with `data`: a power cut at any moment leaves the old or the new file.

    Temp file beside the target, fsync, rename over the target, fsync of the directory. Any
    failure raises StorageError and leaves the old file untouched (the temp file is removed).
    A failing directory fsync after the rename is a failure too: on a journalling filesystem
    it means the journal could not commit, so the rename will not survive a restart either.
    `owner_of`: give the new file that directory's owner (a root CLI writing a service's file).
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}")
        with os.fdopen(fd, "wb") as f:
            if mode is not None:  # None on FAT (the boot partition), which keeps no modes
                os.fchmod(f.fileno(), mode)
            if owner_of is not None:
                st = os.stat(owner_of)
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_directory(path.parent)
    except OSError as exc:
        log.error("could not save %s: %s", path, exc)
        raise StorageError.from_os_error(what, exc) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass  # a read-only or failing disk; the start-up clean-up removes it later


def remove_durably(path: Path, what: str = "the file") -> bool:
    """Delete `path` (if it exists) so that the deletion survives a power cut. True if removed."""
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.error("could not remove %s: %s", path, exc)
        raise StorageError.from_os_error(what, exc) from None
    try:
        fsync_directory(path.parent)
    except OSError as exc:
        raise StorageError.from_os_error(what, exc) from None
    return True


def set_aside(path: Path, broken: Path) -> str:
    """Move a damaged file out of the way, kept for inspection; on storage that cannot do that
    (read-only), leave it where it is. Says which, for the log: the caller goes on either way."""
    try:
        os.replace(path, broken)
        return f"moved to {broken}"
    except OSError as exc:
        return f"left in place ({plain_reason(exc)})"


def remove_stale_temp_files(directory: Path, targets: tuple[str, ...]) -> list[str]:
    """Delete the temp files a power cut or crash left beside `targets` in `directory`.

    `targets` are glob patterns of the files this process writes there (e.g. "settings.json",
    "background-*.jpg"); only regular files named `.<target>.<anything>` directly inside
    `directory` are removed: our own temp names, including those of older versions. Returns the
    names removed.
    """
    removed: list[str] = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for target in targets:
        if "/" in target or target.startswith("."):
            raise ValueError(f"not a file name pattern of ours: {target!r}")
        for candidate in directory.glob(f".{target}.*"):
            try:
                if candidate.parent != directory or not stat.S_ISREG(candidate.lstat().st_mode):
                    continue
                candidate.unlink()
            except OSError as exc:  # read-only storage: nothing to gain by failing the start
                log.warning("cannot remove stale temp file %s: %s", candidate, exc)
                continue
            removed.append(candidate.name)
    if removed:
        log.info("removed %d stale temp file(s) in %s: %s", len(removed), directory,
                 ", ".join(sorted(removed)))
    return removed
