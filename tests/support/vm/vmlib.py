"""A throw-away QEMU VM that runs one script against the host's own root filesystem.

Debian's stock kernel (fetched with `apt-get download`, cached in tests/.cache/vm/), a busybox
initramfs holding just the kernel modules the test needs, the host's / shared read-write over 9p.
The VM's /init loads the modules, mounts the host root at /host and runs the script there with
chroot, so the script sees this checkout and its .venv at the same paths as the host does.
TCG only: KVM is not available (or not reliable) on the build machines.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / "tests" / ".cache" / "vm"
HERE = Path(__file__).resolve().parent
INIT = HERE / "init.sh"
KERNEL_META_PACKAGE = "linux-image-amd64"
# Everything the UVC test loads, dependencies are added from modules.dep.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "configfs", "libcomposite", "usb_f_uvc",
           "usb_f_ncm", "uvcvideo", "usbip-vudc", "vhci-hcd")
HOST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static",
              "v4l2-compliance": "v4l-utils", "depmod": "kmod",
              "cpio": "cpio", "dpkg-deb": "dpkg", "apt-get": "apt",
              "mkfs.ext4": "e2fsprogs", "dmsetup": "dmsetup"}


DEBIAN_VERSION_FILE = "blurcam-debian-version"  # written beside the unpacked kernel
VM_UUID = "6b1c3d2e-0b1a-4c55-9d77-b1c3a4f5e6d7"  # a fixed DMI id: a stable USB serial in the VM


class VmError(RuntimeError):
    pass


def missing_tools() -> list[str]:
    """Debian packages whose programs the VM test needs but this machine lacks."""
    found_busybox = Path("/bin/busybox").exists()
    return sorted({pkg for tool, pkg in HOST_TOOLS.items()
                   if not (shutil.which(tool) or (tool == "busybox" and found_busybox))})


def unavailable() -> str | None:
    """Why a VM test cannot run on this machine (None when it can)."""
    if os.uname().machine != "x86_64":
        return "the VM boots an x86_64 Debian kernel"
    if os.geteuid() != 0:
        return "needs root (the VM's 9p share of / must write as root)"
    missing = missing_tools()
    if missing:
        return f"missing Debian packages: {' '.join(missing)} (tools/system-deps.sh installs them)"
    return None


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VmError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


# Which Debian release's stock kernel: "host" = the suite this machine's apt already uses, or a
# suite name (e.g. trixie: 6.12, the kernel generation Raspberry Pi OS ships) fetched with a
# private apt configuration under the cache, leaving the machine's apt sources untouched.
SUITE = os.environ.get("BLURCAM_VM_SUITE", "host")


def archive_uri() -> str:
    """The Debian archive URI this machine's apt uses (main archive, not the security one)."""
    apt = Path("/etc/apt")
    for sources in sorted(apt.glob("sources.list.d/*.sources")):
        for block in sources.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in block.splitlines()
                          if ":" in line and not line.startswith("#"))
            uri = fields.get("URIs", "").split()
            if uri and "security" not in fields.get("Suites", "") and "security" not in uri[0]:
                return uri[0]
    lists = [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]
    for path in lists:
        for line in path.read_text().splitlines() if path.exists() else []:
            words = [w for w in line.split() if not w.startswith("[") and not w.endswith("]")]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in line:
                return words[1]
    raise VmError("no Debian archive in /etc/apt/sources.list*: cannot fetch a kernel")


def _apt_options(suite: str, cache: Path, foreign_arch: str | None = None) -> list[str]:
    """apt options reading Debian `suite`'s package lists (kept in the cache, never in the
    machine's own apt state); `foreign_arch` (e.g. arm64) adds that architecture's lists."""
    if suite == "host" and foreign_arch is None:
        return []
    if suite == "host":
        raise VmError("packages of a foreign architecture need a named suite (e.g. trixie)")
    root = cache / (f"apt-{suite}" if foreign_arch is None else f"apt-{suite}-{foreign_arch}")
    parts = root / "sources.list.d"
    for d in (parts, root / "lists" / "partial", root / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    (parts / f"{suite}.sources").write_text(
        f"Types: deb\nURIs: {archive_uri()}\nSuites: {suite}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    options = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
               "-o", f"Dir::State::Lists={root / 'lists'}", "-o", f"Dir::Cache={root}",
               "-o", "APT::Sandbox::User=root"]
    if foreign_arch is not None:
        options += ["-o", "APT::Architectures::=amd64", "-o", f"APT::Architectures::={foreign_arch}"]
    if not any((root / "lists").glob("*Packages*")):
        _run(["apt-get", *options, "update"])
    return options


def kernel_package(options: list[str]) -> str:
    """The versioned linux-image package the meta package currently depends on."""
    for line in _run(["apt-cache", *options, "depends", KERNEL_META_PACKAGE]).splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split()[-1]
    raise VmError(f"apt-cache knows no dependency of {KERNEL_META_PACKAGE}")


def _modules_root(unpacked: Path) -> Path:
    merged = unpacked / "usr" / "lib" / "modules"  # trixie and later ship modules under /usr
    return merged if merged.is_dir() else unpacked / "lib" / "modules"


def prepare_kernel(suite: str = SUITE, cache: Path = CACHE) -> tuple[Path, Path, str]:
    """(vmlinuz, modules dir, version) of Debian's kernel, downloaded and unpacked once."""
    base = cache / f"kernel-{suite}"
    base.mkdir(parents=True, exist_ok=True)
    for unpacked in sorted(base.glob("linux-image-*")):
        for tree in sorted(_modules_root(unpacked).glob("*/modules.dep")):
            vmlinuz = unpacked / "boot" / f"vmlinuz-{tree.parent.name}"
            if vmlinuz.exists():
                return vmlinuz, tree.parent, tree.parent.name
    options = _apt_options(suite, cache)
    package = kernel_package(options)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        _run(["apt-get", *options, "download", package], cwd=Path(tmp))
        deb = next(Path(tmp).glob("*.deb"))
        unpacked = base / package
        shutil.rmtree(unpacked, ignore_errors=True)
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)])
        deb_version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    modules_root = _modules_root(unpacked)
    version = next(modules_root.iterdir()).name
    if not (unpacked / "lib").exists():
        (unpacked / "lib").symlink_to("usr/lib")  # depmod -b looks in BASE/lib/modules
    # The package ships no modules.dep (the postinst makes it); make it here.
    _run(["depmod", "-b", str(unpacked), version])
    (unpacked / DEBIAN_VERSION_FILE).write_text(deb_version + "\n")
    return unpacked / "boot" / f"vmlinuz-{version}", modules_root / version, version


def debian_version(vmlinuz: Path, suite: str = SUITE, cache: Path = CACHE) -> str:
    """The Debian package version of the kernel `prepare_kernel` gave (e.g. 6.1.192-2): the
    version its source and headers packages must have for a module built against it."""
    unpacked = vmlinuz.parent.parent
    recorded = unpacked / DEBIAN_VERSION_FILE
    if recorded.exists():
        return recorded.read_text().strip()
    # A kernel cached before the version was recorded: ask apt about its package.
    package = unpacked.name
    out = _run(["apt-cache", *_apt_options(suite, cache), "show", "--no-all-versions", package])
    version = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Version:")), None)
    if version is None:
        raise VmError(f"apt knows no version of {package} (the cached kernel in {unpacked})")
    recorded.write_text(version + "\n")
    return version


def _module_closure(modules_dir: Path, wanted: tuple[str, ...]) -> list[str]:
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("_", "-"): p for p in deps}
    builtin = (modules_dir / "modules.builtin").read_text()
    out: set[str] = set()
    for name in wanted:
        path = by_name.get(name.replace("_", "-"))
        if path is None:
            if f"/{name}.ko" in builtin or f"/{name.replace('-', '_')}.ko" in builtin:
                continue
            raise VmError(f"kernel module {name} not in {modules_dir}")
        out.add(path)
        out.update(deps[path])
    return sorted(out)


def module_dependencies(module: Path) -> list[str]:
    """The kernel modules an out-of-tree module needs loaded first (its modinfo `depends`)."""
    return [name for name in _run(["modinfo", "-F", "depends", str(module)]).strip().split(",") if name]


def load_order(modules: tuple[str, ...], extra_modules: tuple[Path, ...]) -> tuple[str, ...]:
    """What /init loads, in order: `modules`, then each extra module after what it needs."""
    order = list(modules)
    for ko in extra_modules:
        order += [dep for dep in module_dependencies(ko) if dep not in order]
        order.append(ko.name.removesuffix(".ko"))
    return tuple(order)


def build_initramfs(modules_dir: Path, version: str, cache: Path = CACHE,
                    modules: tuple[str, ...] = MODULES, extra_modules: tuple[Path, ...] = ()) -> Path:
    """busybox + /init + the test's kernel modules, as an uncompressed newc cpio archive.
    `extra_modules` are out-of-tree .ko files (built for this kernel) stored in /lib/modules/extra."""
    wanted = load_order(modules, extra_modules)
    key = hashlib.sha256("\n".join(wanted).encode()
                         + b"".join(ko.read_bytes() for ko in extra_modules)).hexdigest()[:10]
    out = cache / f"initramfs-{version}-{len(MODULES)}.cpio" if not extra_modules and modules == MODULES \
        else cache / f"initramfs-{version}-{key}.cpio"
    if out.exists() and out.stat().st_mtime >= INIT.stat().st_mtime:
        return out
    extra_names = {ko.name.removesuffix(".ko") for ko in extra_modules}
    closure = _module_closure(modules_dir, tuple(m for m in wanted if m not in extra_names))
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "host", "tmp"):
            (root / d).mkdir(parents=True)
        busybox = shutil.which("busybox") or "/bin/busybox"
        shutil.copy2(busybox, root / "bin" / "busybox")
        shutil.copy2(INIT, root / "init")
        (root / "init").chmod(0o755)
        target = root / "lib" / "modules" / version
        for rel in closure:
            plain = target / rel.removesuffix(".xz")
            plain.parent.mkdir(parents=True, exist_ok=True)
            # busybox modprobe may not read compressed modules: store them plain.
            if rel.endswith(".xz"):
                plain.write_bytes(lzma.decompress((modules_dir / rel).read_bytes()))
            else:
                shutil.copy2(modules_dir / rel, plain)
        if extra_modules:
            (root / "lib" / "modules" / "extra").mkdir(parents=True)
        for ko in extra_modules:
            shutil.copy2(ko, root / "lib" / "modules" / "extra" / ko.name)
        lines = [line for line in (modules_dir / "modules.dep").read_text().splitlines()
                 if line.partition(":")[0] in closure]
        shutil.copy2(modules_dir / "modules.builtin", target / "modules.builtin")
        (target / "modules.dep").write_text("\n".join(lines).replace(".ko.xz", ".ko") + "\n")
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        with open(out.with_suffix(".tmp"), "wb") as f:
            proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root,
                                  input=("\n".join(files) + "\n").encode(), stdout=f,
                                  stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise VmError(f"cpio failed: {proc.stderr.decode()[-500:]}")
        os.replace(out.with_suffix(".tmp"), out)
    return out


def qemu_command(script: Path, run_dir: Path, memory_mb: int = 2048, cpus: int = 2,
                 modules: tuple[str, ...] = MODULES, extra_modules: tuple[Path, ...] = (),
                 cpu_model: str = "max", disks: tuple[Path, ...] = (),
                 report_file: Path | None = None, suite: str = SUITE) -> list[str]:
    """The qemu command line of a VM that runs `script` (see run_vm).

    `disks`: raw disk images, attached as virtio disks /dev/vda, /dev/vdb, ... in this order.
    `report_file`: the VM's second serial port /dev/ttyS1 is written to this host file as it
    happens, so whatever the guest reported there survives QEMU being killed (unlike files on
    the 9p share, which the guest may still hold in its page cache).
    `suite`: whose stock kernel boots (see SUITE)."""
    vmlinuz, modules_dir, version = prepare_kernel(suite)
    initramfs = build_initramfs(modules_dir, version, modules=modules, extra_modules=extra_modules)
    run_dir.mkdir(parents=True, exist_ok=True)
    load = ",".join(load_order(modules, extra_modules))
    # no_timer_check: under TCG on a busy host the kernel may wrongly find the IO-APIC timer
    # broken and panic at boot ("IO-APIC + timer doesn't work!").
    cmdline = (f"console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check "
               f"blurcam_script={script} blurcam_run={run_dir} blurcam_load={load}")
    cmd = ["qemu-system-x86_64", "-machine", "pc", "-cpu", cpu_model, "-m", str(memory_mb),
           "-smp", str(cpus), "-uuid", VM_UUID, "-nographic", "-no-reboot", "-nic", "none",
           "-kernel", str(vmlinuz), "-initrd", str(initramfs), "-append", cmdline,
           "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,multidevs=remap"]
    for disk in disks:
        cmd += ["-drive", f"file={disk},format=raw,if=virtio,cache=writeback"]
    if report_file is not None:
        cmd += ["-serial", "mon:stdio", "-serial", f"file:{report_file}"]
    return cmd


def run_vm(script: Path, run_dir: Path, timeout: float = 900, memory_mb: int = 2048,
           cpus: int = 2, modules: tuple[str, ...] = MODULES,
           extra_modules: tuple[Path, ...] = (), cpu_model: str = "max",
           disks: tuple[Path, ...] = (), suite: str = SUITE) -> subprocess.CompletedProcess:
    """Boot the VM, run `script` (a shell script on the host filesystem) inside it via chroot,
    its output going to run_dir/guest.log. Returns qemu's result (console in run_dir/console.log).
    /init loads `modules` (the kernel's own) and then `extra_modules` (.ko files built for it).
    `suite`: whose stock kernel boots (see SUITE)."""
    cmd = qemu_command(script, run_dir, memory_mb, cpus, modules, extra_modules, cpu_model, disks,
                       suite=suite)
    with open(run_dir / "console.log", "wb") as console:
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=console,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VmError(f"VM did not finish within {timeout:.0f} s; see {run_dir}/console.log "
                          f"and {run_dir}/guest.log") from None


def fresh_run_dir(runs: Path) -> Path:
    """A new, empty, time-stamped directory for one VM run in `runs`, a folder directly in CACHE.
    Earlier runs in `runs` are removed first: only the newest run's logs and disks are kept."""
    if runs.resolve().parent != CACHE.resolve():
        raise VmError(f"refusing to clear {runs}: VM run folders live directly in {CACHE}")
    shutil.rmtree(runs, ignore_errors=True)
    run_dir = runs / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    return run_dir


def read_results(run_dir: Path) -> dict:
    """What a guest script recorded in run_dir/results.json (with "run_dir" added); when it wrote
    nothing, a VmError with the ends of the console and guest logs, which say why."""
    results_file = run_dir / "results.json"
    if not results_file.exists():
        console = (run_dir / "console.log").read_text(errors="replace")[-3000:]
        guest = (run_dir / "guest.log").read_text(errors="replace")[-3000:] \
            if (run_dir / "guest.log").exists() else ""
        raise VmError(f"the VM wrote no results ({run_dir}).\nconsole:\n{console}\nguest:\n{guest}")
    results = json.loads(results_file.read_text())
    results["run_dir"] = str(run_dir)
    return results
