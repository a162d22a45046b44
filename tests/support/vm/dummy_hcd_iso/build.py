"""Build the test-only kernel module dummy_hcd_iso.ko for the exact Debian kernel the VM boots.

dummy_hcd joins a USB device controller (dummy_udc) and a host controller (dummy_hcd) inside one
kernel, so our gadget and the Linux webcam driver meet in one VM. Mainline's dummy_hcd leaves out
isochronous endpoints and fails isochronous URBs; iso.patch (ours) carries them, one packet per
endpoint and timer tick, which is all a UVC gadget needs to stream.

Inputs are fetched by Debian package name, all at the kernel image's own version: linux-source-X.Y
(only dummy_hcd.c is kept). For this machine's own Debian release, linux-headers-RELEASE with its
-common and linux-kbuild packages are unpacked under the cache (never installed) and the module is
compiled here with the kernel's compiler. For another release (suite, e.g. trixie's 6.12, built
with a newer gcc and glibc than this machine has) a minimal build root of that release is made with
mmdebstrap (the compiler, make, libc6-dev and the headers package installed in it, never on this
machine) and the module is compiled in it with chroot. For another architecture (arch, e.g. the
arm64 kernel the SD image boots) the module is cross-compiled the way Debian's own headers
packages allow: a build root of that release for this machine's architecture holds make, the
kernel's cross compiler (gcc-N-<triplet>, named by the headers' .config) and the kernel's kbuild
tools, and the foreign-architecture headers packages are unpacked into it (never installed:
they would pull in that architecture's kernel and compiler). Results are cached by suite +
architecture + kernel release + package version + the hash of our patch and Kbuild file (the
build root by suite + kernel + package list). The module is loaded only inside the test VM, never
on the machine that builds it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.vm import vmlib

HERE = Path(__file__).resolve().parent
PATCH = HERE / "iso.patch"
KBUILD = HERE / "Kbuild"
MODULE_NAME = "dummy_hcd_iso"
SOURCE_FILE = "drivers/usb/gadget/udc/dummy_hcd.c"
BUILD_TOOLS = {"make": "make", "patch": "patch", "modinfo": "kmod", "xz": "xz-utils"}
# What a build root of another Debian release needs besides the kernel's headers package (which
# brings its kbuild tools, its -common tree and, through linux-compiler-gcc-N, its compiler).
BUILD_ROOT_PACKAGES = ("make", "libc6-dev")
# A cross build root: make and the kernel's kbuild tools; the cross compiler is added by name.
CROSS_ROOT_PACKAGES = ("make",)
BUILD_ROOT_TOOLS = {"mmdebstrap": "mmdebstrap", "chroot": "coreutils", "patch": "patch",
                    "modinfo": "kmod", "xz": "xz-utils"}


class ModuleBuildError(vmlib.VmError):
    """The test module could not be built; the message says which step failed and why."""


def missing_tools(suite: str = vmlib.SUITE) -> list[str]:
    """Debian packages whose programs the build needs but this machine lacks."""
    tools = BUILD_TOOLS if suite == "host" else BUILD_ROOT_TOOLS
    return sorted({pkg for tool, pkg in tools.items() if not shutil.which(tool)})


def recipe_hash() -> str:
    """Changes whenever our patch or Kbuild file changes (part of the cache key)."""
    digest = hashlib.sha256(PATCH.read_bytes() + b"\0" + KBUILD.read_bytes())
    return digest.hexdigest()[:12]


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 900) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ModuleBuildError(f"{what}: `{' '.join(cmd)}` took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-3000:]
        raise ModuleBuildError(f"{what}: `{' '.join(cmd)}` exited {proc.returncode}:\n{detail}")
    return proc.stdout


def _headers_dependencies(headers: str, version: str, options: list[str]) -> list[str]:
    """The -common and linux-kbuild packages a linux-headers package needs, as apt-get
    specifications that keep to its Depends: `name=version` where it asks for that exact version,
    the bare name (apt's newest, which satisfies it) where it asks for `>=` one. Debian's security
    updates replace linux-kbuild with a newer build while an older kernel ABI keeps its headers."""
    out = _run(["apt-cache", *options, "show", f"{headers}={version}"],
               f"looking up {headers} {version} in apt")
    depends = next((line for line in out.splitlines() if line.startswith("Depends:")), "")
    wanted = [f"{name}={wanted_version}" if relation == "=" else name for name, relation, wanted_version
              in re.findall(r"(linux-(?:headers|kbuild)-[^\s,(]+)(?:\s*\((>?=)\s*([^)\s]+)\))?", depends)]
    if not any(n.split("=")[0].endswith("-common") for n in wanted) or not any("kbuild" in n for n in wanted):
        raise ModuleBuildError(f"{headers} {version}: unexpected dependencies {depends!r}")
    return wanted


def _download(specs: list[str], options: list[str], into: Path) -> None:
    """apt-get download of `specs` (`name=version` or `name`) into `into`."""
    try:
        _run(["apt-get", *options, "download", *specs], "downloading the kernel build inputs", cwd=into)
    except ModuleBuildError as exc:
        raise ModuleBuildError(
            f"{exc}\nThe archive no longer offers what the kernel cached in {vmlib.CACHE} needs: "
            "delete its kernel-* directory so the current kernel is fetched.") from None


def prepare_build_tree(release: str, version: str, suite: str = vmlib.SUITE,
                       cache: Path = vmlib.CACHE) -> tuple[Path, Path]:
    """(headers build dir, pristine dummy_hcd.c) for the kernel `release` of Debian `version`."""
    root = cache / f"kbuild-{release}-{version}"
    headers_dir = root / "usr" / "src" / f"linux-headers-{release}"
    source = root / "dummy_hcd.c"
    if (headers_dir / "Makefile").exists() and source.exists():
        return headers_dir, source
    options = vmlib._apt_options(suite, cache)
    headers = f"linux-headers-{release}"
    major_minor = ".".join(release.split(".")[:2])
    specs = [f"{headers}={version}", *_headers_dependencies(headers, version, options),
             f"linux-source-{major_minor}={version}"]
    if root.exists():
        _remove_cache_dir(root, cache)
    with tempfile.TemporaryDirectory(dir=cache, prefix="kbuild-download-") as tmp:
        work = Path(tmp)
        _download(specs, options, work)
        unpacked = work / "root"
        for deb in sorted(work.glob("linux-headers-*.deb")) + sorted(work.glob("linux-kbuild-*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(unpacked)], f"unpacking {deb.name}")
        shutil.copy2(_extract_source(work, major_minor), unpacked / "dummy_hcd.c")
        # The arch Makefile includes the -common one by absolute path: point it into the cache.
        makefile = unpacked / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
        text = makefile.read_text()
        common = re.search(r"^include (/usr/src/linux-headers-[^\s]+-common/Makefile)$", text, re.M)
        if common is None:
            raise ModuleBuildError(f"{makefile}: no include of the -common Makefile:\n{text}")
        makefile.write_text(text.replace(common.group(1), str(root) + common.group(1)))
        unpacked.rename(root)
    return headers_dir, source


def _extract_source(work: Path, major_minor: str) -> Path:
    """dummy_hcd.c out of the linux-source package downloaded into `work` (only this one file of
    the 150 MB source tarball is unpacked)."""
    source_deb = next(work.glob("linux-source-*.deb"), None)
    if source_deb is None:
        raise ModuleBuildError(f"apt-get download fetched no linux-source-{major_minor} package")
    tarball = f"./usr/src/linux-source-{major_minor}.tar.xz"
    _run(["bash", "-c", 'set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" '
          '| tar -xJ -C "$3" --wildcards "$4"',
          "bash", str(source_deb), tarball, str(work), f"*/{SOURCE_FILE}"],
         f"extracting {SOURCE_FILE} from {source_deb.name}", timeout=1800)
    found = list(work.glob(f"*/{SOURCE_FILE}"))
    if len(found) != 1:
        raise ModuleBuildError(f"{source_deb.name} holds no {SOURCE_FILE}")
    return found[0]


def pristine_source(release: str, version: str, suite: str, cache: Path = vmlib.CACHE) -> Path:
    """dummy_hcd.c of the Debian kernel source `version`, fetched once and cached."""
    source = cache / f"source-{release}-{version}" / "dummy_hcd.c"
    if source.exists():
        return source
    major_minor = ".".join(release.split(".")[:2])
    options = vmlib._apt_options(suite, cache)
    with tempfile.TemporaryDirectory(dir=cache, prefix="source-download-") as tmp:
        work = Path(tmp)
        _download([f"linux-source-{major_minor}={version}"], options, work)
        staging = work / "out"
        staging.mkdir()
        shutil.copy2(_extract_source(work, major_minor), staging / "dummy_hcd.c")
        if source.parent.exists():
            _remove_cache_dir(source.parent, cache)
        staging.rename(source.parent)
    return source


def _cross_headers(release: str, version: str, suite: str, arch: str, cache: Path,
                   into: Path) -> tuple[str, str]:
    """Download kernel `release`'s `arch` headers packages (and their -common one) into `into`;
    (cross compiler package, kbuild tools package as an apt specification) they need from the
    build machine's side."""
    headers = f"linux-headers-{release}"
    options = vmlib._apt_options(suite, cache, foreign_arch=arch)
    wanted = _headers_dependencies(f"{headers}:{arch}", version, options)
    common = [n for n in wanted if n.split("=")[0].endswith("-common")]
    kbuild = next(n for n in wanted if "kbuild" in n)
    _download([f"{headers}:{arch}={version}", *common], options, into)
    staging = into / "headers"
    for deb in sorted(into.glob("linux-headers-*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(staging)], f"unpacking {deb.name}")
    cc = compiler(staging / "usr" / "src" / headers)  # e.g. aarch64-linux-gnu-gcc-14
    match = re.fullmatch(r"([\w-]+)-(gcc-\d+)", cc)
    if match is None:
        raise ModuleBuildError(f"{headers}: kernel compiler {cc!r} is not a Debian cross gcc-N")
    return f"{match.group(2)}-{match.group(1)}", kbuild


def cross_build_root(release: str, version: str, suite: str, arch: str,
                     cache: Path = vmlib.CACHE) -> Path:
    """A minimal Debian `suite` system of this machine's architecture that cross-compiles modules
    for kernel `release` of `arch`: make, the kernel's cross compiler and kbuild tools installed,
    the `arch` headers unpacked into it. Made once with mmdebstrap and cached (see build_root)."""
    headers = f"linux-headers-{release}"
    key = hashlib.sha256(" ".join(["cross", suite, arch, release, version]).encode()).hexdigest()[:10]
    root = cache / f"buildroot-{suite}-{arch}-{release}-{key}"
    if (root / "usr" / "src" / headers / "Makefile").exists():
        return root
    with tempfile.TemporaryDirectory(dir=cache, prefix="buildroot-make-") as tmp:
        work = Path(tmp)
        cross_gcc, kbuild = _cross_headers(release, version, suite, arch, cache, work)
        packages = [*CROSS_ROOT_PACKAGES, cross_gcc, kbuild]
        staging = _debootstrap(suite, packages, work, f"{headers}:{arch} {version}")
        _run(["cp", "-a", f"{work / 'headers'}/.", str(staging)],
             f"adding the {arch} headers to the {suite} build root")
        _keep_root(staging, root, headers, cache)
    return root


def _debootstrap(suite: str, packages: list[str], work: Path, what: str) -> Path:
    """mmdebstrap a minimal `suite` with `packages` as a tarball, unpacked to work/root."""
    tarball = work / "root.tar"
    _run(["mmdebstrap", "--mode=root", "--variant=minbase", "--quiet",
          f"--include={','.join(packages)}", suite, str(tarball), vmlib.archive_uri()],
         f"making a {suite} build root for {what}", timeout=3600)
    staging = work / "root"
    staging.mkdir()
    _run(["tar", "-xf", str(tarball), "-C", str(staging)], f"unpacking the {suite} build root")
    tarball.unlink()
    return staging


def build_root(release: str, version: str, suite: str, cache: Path = vmlib.CACHE) -> Path:
    """A minimal Debian `suite` system with the compiler, kbuild tools and headers of kernel
    `release` (package `version`) installed in it, made once with mmdebstrap and cached. It is
    written as a tarball by mmdebstrap and unpacked here, so no filesystem is ever mounted
    inside the cache (deleting a stale root can never reach the machine's own /dev or /proc)."""
    headers = f"linux-headers-{release}"
    packages = [*BUILD_ROOT_PACKAGES, f"{headers}={version}"]
    key = hashlib.sha256(" ".join([suite, *packages]).encode()).hexdigest()[:10]
    root = cache / f"buildroot-{suite}-{release}-{key}"
    if (root / "usr" / "src" / headers / "Makefile").exists():
        return root
    with tempfile.TemporaryDirectory(dir=cache, prefix="buildroot-make-") as tmp:
        staging = _debootstrap(suite, packages, Path(tmp), f"{headers} {version}")
        _keep_root(staging, root, headers, cache)
    return root


def _keep_root(staging: Path, root: Path, headers: str, cache: Path) -> None:
    """Move a finished build root into its cache place, once it holds the kernel's headers."""
    if not (staging / "usr" / "src" / headers / "Makefile").exists():
        raise ModuleBuildError(f"the build root made for {root.name} has no {headers}")
    if root.exists():
        _remove_cache_dir(root, cache)
    staging.rename(root)


def _remove_cache_dir(path: Path, cache: Path) -> None:
    """Delete a directory this module created in the cache, and nothing else (never one with a
    filesystem mounted below it)."""
    resolved = path.resolve()
    if resolved.parent != cache.resolve() or \
            not resolved.name.startswith(("kbuild-", "module-", "buildroot-", "source-")):
        raise ModuleBuildError(f"refusing to delete {resolved}: not a build directory of ours")
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    below = [m for m in mounts if m == str(resolved) or m.startswith(f"{resolved}/")]
    if below:
        raise ModuleBuildError(f"refusing to delete {resolved}: {below[0]} is mounted inside it")
    shutil.rmtree(resolved)


def compiler(headers_dir: Path) -> str:
    """The compiler the kernel was built with (e.g. gcc-12): modules must use the same one."""
    config = (headers_dir / ".config").read_text()
    match = re.search(r'^CONFIG_CC_VERSION_TEXT="(\S+)', config, re.M)
    if match is None:
        raise ModuleBuildError(f"{headers_dir}/.config names no compiler")
    return match.group(1)


def build(release: str, version: str, suite: str = vmlib.SUITE, cache: Path = vmlib.CACHE,
          arch: str | None = None) -> Path:
    """The patched module for kernel `release` (Debian package `version`), built once and cached.
    For this machine's own release it is compiled here; for another one in a build root of that
    release (see build_root); for another architecture `arch` (e.g. arm64) cross-compiled in a
    build root of release `suite` (see cross_build_root)."""
    if suite == "host":
        out_dir = cache / f"module-{MODULE_NAME}-{release}-{version}-{recipe_hash()}"
    elif arch is None:
        out_dir = cache / f"module-{MODULE_NAME}-{suite}-{release}-{version}-{recipe_hash()}"
    else:
        out_dir = cache / f"module-{MODULE_NAME}-{suite}-{arch}-{release}-{version}-{recipe_hash()}"
    module = out_dir / f"{MODULE_NAME}.ko"
    if module.exists():
        return module
    cache.mkdir(parents=True, exist_ok=True)
    missing = missing_tools(suite)
    if missing:
        raise ModuleBuildError(f"building {MODULE_NAME} needs the Debian packages {' '.join(missing)}")
    if suite == "host":
        headers_dir, pristine = prepare_build_tree(release, version, suite, cache)
        cc = compiler(headers_dir)
        if not shutil.which(cc):
            raise ModuleBuildError(f"kernel {release} was built with {cc}, which this machine lacks "
                                   f"(apt-get install {cc}): a module must be built with the same compiler")
        root = None
    else:
        pristine = pristine_source(release, version, suite, cache)  # the same source for every arch
        root = (build_root(release, version, suite, cache) if arch is None
                else cross_build_root(release, version, suite, arch, cache))
    with tempfile.TemporaryDirectory(dir=cache if root is None else root / "tmp",
                                     prefix="module-build-") as tmp:
        src = Path(tmp)
        target = src / SOURCE_FILE
        target.parent.mkdir(parents=True)
        shutil.copy2(pristine, target)
        _run(["patch", "-p1", "--forward", "--no-backup-if-mismatch", "-i", str(PATCH)],
             f"applying {PATCH.name} to the {release} dummy_hcd.c", cwd=src)
        build_dir = src / "build"
        build_dir.mkdir()
        shutil.copy2(target, build_dir / "dummy_hcd.c")
        shutil.copy2(KBUILD, build_dir / "Kbuild")
        what = f"compiling {MODULE_NAME} against linux-headers-{release}"
        if root is None:
            _run(["make", "-C", str(headers_dir), f"M={build_dir}", "modules"], what)
        else:  # the same make, run inside the build root
            inside = Path("/") / build_dir.relative_to(root)
            _run(["chroot", str(root), "make", "-C", f"/usr/src/linux-headers-{release}",
                  f"M={inside}", "modules"], f"{what} in the {suite} build root {root}")
        built = build_dir / f"{MODULE_NAME}.ko"
        vermagic = _run(["modinfo", "-F", "vermagic", str(built)], "reading the module's vermagic")
        if vermagic.split()[:1] != [release]:
            raise ModuleBuildError(f"{built.name} has vermagic {vermagic.strip()!r}, not {release}")
        if out_dir.exists():
            _remove_cache_dir(out_dir, cache)
        staging = Path(tempfile.mkdtemp(dir=cache, prefix="module-out-"))
        shutil.copy2(built, staging / built.name)
        staging.rename(out_dir)
    return module
