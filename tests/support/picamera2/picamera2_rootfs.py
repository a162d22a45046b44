"""The picamera2 test rootfs: build it once per recipe, and run commands inside it.

The rootfs is cached in tests/.cache/picamera2-rootfs-<hash of the recipe>/; changing
build_rootfs.sh or requirements.txt changes the hash and so rebuilds it. Commands run in a private
mount namespace (unshare), where the project source, the scenes and the virtual camera's config
are bind-mounted: nothing is baked in, and every mount vanishes with the command.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = REPO / "tests" / ".cache"
RECIPE = (HERE / "build_rootfs.sh", HERE / "requirements.txt")
VIRTUAL_YAML = "usr/share/libcamera/pipeline/virtual/virtual.yaml"


def unavailable_reason() -> str | None:
    """Why the rootfs tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, chroot and mount namespaces)"
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tools/apt-packages/picamera2.txt lists it)"
    return None


def recipe_hash() -> str:
    h = hashlib.sha256()
    for path in RECIPE:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def ensure_rootfs() -> Path:
    """The cached rootfs for the current recipe, building it (~3 min) if missing."""
    root = CACHE / f"picamera2-rootfs-{recipe_hash()}"
    if (root / "opt/venv/bin/python").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "picamera2-rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it right now
        if not (root / "opt/venv/bin/python").exists():
            _build(root)
    return root


def remove_tree(path: Path) -> None:
    """rm -r of one of our rootfs directories in tests/.cache, and nothing else: refuses any other
    path, and refuses while something is mounted inside (an interrupted build can leave the
    host's /dev bound there; deleting through it would delete the host's device nodes)."""
    path = path.absolute()
    if path.parent != CACHE.absolute() or not path.name.startswith("picamera2-rootfs-"):
        raise RuntimeError(f"refusing to remove {path}: not a picamera2 rootfs in {CACHE}")
    with open("/proc/self/mountinfo") as f:
        mounted = [m for m in (line.split()[4] for line in f)
                   if m == str(path) or m.startswith(str(path) + "/")]
    if mounted:
        raise RuntimeError(f"not removing {path}: still mounted there: {mounted}; unmount them")
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    shutil.rmtree(path)


def _build(root: Path) -> None:
    for stale in CACHE.glob("picamera2-rootfs-*"):  # older recipes, half-built attempts
        remove_tree(stale)
    partial = root.with_name(root.name + ".partial")
    result = subprocess.run(["sh", str(HERE / "build_rootfs.sh"), str(partial)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        remove_tree(partial)
        raise RuntimeError(f"building the picamera2 rootfs failed:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    partial.rename(root)


def run_in_rootfs(root: Path, args: list[str], *, virtual_yaml: Path, frames_dir: Path,
                  out_dir: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run /opt/venv/bin/python ARGS in the rootfs with the project mounted read-only at
    /opt/blurcam, `frames_dir` at /opt/frames, `out_dir` at /out and `virtual_yaml` as the
    virtual camera's configuration."""
    mounts = [
        ("--bind", "/dev", "dev"),
        ("-o", "ro,bind", str(REPO), "opt/blurcam"),
        ("-o", "ro,bind", str(frames_dir), "opt/frames"),
        ("--bind", str(out_dir), "out"),
        ("-o", "ro,bind", str(virtual_yaml), VIRTUAL_YAML),
    ]
    (root / "out").mkdir(exist_ok=True)
    script = ["set -e", f'mount -t proc proc "{root}/proc"']
    for *opts, target in mounts:
        script.append("mount " + " ".join(f'"{o}"' for o in opts) + f' "{root}/{target}"')
    script.append(f'exec chroot "{root}" env -i PATH=/usr/bin:/bin HOME=/root '
                  'PYTHONDONTWRITEBYTECODE=1 LIBCAMERA_LOG_LEVELS="*:ERROR" '
                  '/opt/venv/bin/python -u "$@"')
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork",
                           "sh", "-c", "\n".join(script), "sh", *args],
                          capture_output=True, text=True, timeout=timeout)
