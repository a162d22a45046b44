"""The picamera2 test rootfs: build it once per recipe, and run commands inside it.

The rootfs is cached in tests/.cache/picamera2-rootfs-<hash of the recipe>/; changing
build_rootfs.sh or requirements.txt changes the hash and so rebuilds it. Commands run in a private
mount namespace (unshare), where the project source, the scenes and the virtual camera's config
are bind-mounted: nothing is baked in, and every mount vanishes with the command.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
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
    for stale in CACHE.glob("picamera2-rootfs-*"):  # older recipes, half-built attempts
        shutil.rmtree(stale, ignore_errors=True)
    partial = root.with_name(root.name + ".partial")
    result = subprocess.run(["sh", str(HERE / "build_rootfs.sh"), str(partial)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"building the picamera2 rootfs failed:\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    partial.rename(root)
    return root


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
