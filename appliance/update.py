"""A/B updates on the device (image-build/update/README.md).

`install` hands a signed bundle (a file or a URL) to RAUC, which checks its signature and writes
it into the slot that is not running, then marks that slot primary with a single boot attempt;
the device then reboots into it "on trial". `confirm`, run at every boot by
blurcam-update-confirm.service once the appliance is up, decides the trial: if the health check
passes (the daemon answers and reports no error, the USB gadget is bound to a controller, the
self-test passes) the slot is marked good and kept; otherwise it is marked bad and the device
reboots into the previous slot. A slot that never gets as far as `confirm` (kernel panic, hang,
power cut) has used its one attempt, so the boot loader returns to the previous slot by itself.
A good slot's boot writes nothing to the card. A kernel that the boot loader RAUC works with did
not start (QEMU booting the kernel directly, as the image's VM test does) has no trial to judge:
`confirm` says so and does nothing; on a device, where that boot loader always runs, it judges.

RAUC does the slot work; this module only drives it through the `rauc` command (the D-Bus client
of rauc.service), and keeps the read-only boot partition writable for the moments a verdict is
written there (installs do that in RAUC's pre/post-install handlers, image-build/update/device).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BOOT_DIR = Path("/boot/firmware")  # p1: the slot state (bootslot.env or autoboot.txt) lives here
DOWNLOAD_DIR = Path("/var/lib/blurcam/update")  # on the data partition: the SD's free space
CONTROL_SOCKET = Path("/run/blurcam/control.sock")
GADGET = Path("/sys/kernel/config/usb_gadget/blurcam")
REBOOT = ("systemctl", "reboot")
# Written by the tryboot backend (image-build/update/device/rauc-tryboot) while a trial waits for
# its boot: the Pi 4/5 firmware starts the trial slot only on a reboot with this argument.
TRYBOOT_PENDING = "blurcam-tryboot"
TRYBOOT_ARGUMENT = "0 tryboot"
RAUC_SYSTEM_CONF = Path("/etc/rauc/system.conf")  # links to the board's (rauc-config, at boot)
DEVICE_TREE_CHOSEN = Path("/proc/device-tree/chosen")
# What the boot loader behind each of RAUC's backends here leaves in the device tree's /chosen
# when it starts the kernel: U-Boot (Zero 2 W, the QEMU test VM) its version; the Pi 4/5
# firmware (tryboot, RAUC's custom backend) its bootloader node.
BOOT_LOADER_MARKS = {"uboot": ("u-boot,version", "U-Boot"),
                     "custom": ("bootloader", "the Raspberry Pi firmware (tryboot)")}
DOWNLOAD_TIMEOUT_S = 60
# A download leaves this much of the data partition free: settings must still save during and after it.
DOWNLOAD_RESERVE = 16 * 2**20


class UpdateError(RuntimeError):
    """An update step failed; the message says which and why, in words for an operator."""


@dataclass(frozen=True)
class SlotState:
    booted: str  # bootname of the running slot: "A" or "B"
    primary: str | None  # bootname the next boot starts
    booted_good: bool  # False while the running slot is on trial (or was marked bad)
    versions: dict[str, str | None]  # bootname -> version of the bundle RAUC installed there


def _rauc(*args: str, timeout: float | None = None) -> str:
    try:
        done = subprocess.run(["rauc", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise UpdateError("rauc is not installed on this system") from None
    if done.returncode != 0:
        lines = (done.stdout + "\n" + done.stderr).splitlines()
        # `rauc install` prints progress, then "LastError: <the reason>"; other commands an error line.
        reasons = [line.split(":", 1)[1].strip() for line in lines if line.startswith("LastError:")]
        reasons = reasons or [line.strip() for line in lines if line.strip()][-2:]
        raise UpdateError(" / ".join(reasons) or f"rauc {args[0]} failed (exit status {done.returncode})")
    return done.stdout


def slot_state() -> SlotState:
    data = json.loads(_rauc("status", "--detailed", "--output-format=json"))
    slots = {name: info for entry in data["slots"] for name, info in entry.items()}
    versions = {info["bootname"]: ((info.get("slot_status") or {}).get("bundle") or {}).get("version")
                for info in slots.values() if info.get("bootname")}
    booted = data["booted"]
    booted_slot = next((s for s in slots.values() if s.get("bootname") == booted), None)
    if booted_slot is None:
        raise UpdateError(f"rauc reports booted slot {booted!r}, which system.conf does not define")
    primary = slots.get(data.get("boot_primary") or "", {}).get("bootname")
    return SlotState(booted=booted, primary=primary, booted_good=booted_slot.get("boot_status") == "good",
                     versions=versions)


def _is_read_only_mount(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == real:
                return "ro" in fields[5].split(",")
    return False


@contextmanager
def writable_boot_partition(boot_dir: Path = BOOT_DIR) -> Iterator[None]:
    """The boot partition is mounted read-only; RAUC's boot loader backend writes the slot state
    there. Remount it read-write for the duration, and read-only again afterwards."""
    remount = _is_read_only_mount(boot_dir)
    if remount:
        subprocess.run(["mount", "-o", "remount,rw", str(boot_dir)], check=True)
    try:
        yield
    finally:
        if remount:
            os.sync()
            subprocess.run(["mount", "-o", "remount,ro", str(boot_dir)], check=False)


def url_problem(url: str) -> str | None:
    """None for a URL a bundle can be downloaded from (http or https), else what is wrong."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return f"{url!r} is not an http(s) URL"
    return None


def room_problem(size: int, into: Path) -> str | None:
    """None when a download of `size` bytes fits in `into`'s filesystem with DOWNLOAD_RESERVE to
    spare, else a sentence saying it does not (checked before a byte is written)."""
    free = shutil.disk_usage(into).free
    if size + DOWNLOAD_RESERVE <= free:
        return None
    return (f"the bundle ({size / 1e6:.1f} MB) does not fit on the data partition: {free / 1e6:.1f} MB "
            f"free, of which {DOWNLOAD_RESERVE >> 20} MiB stay for settings")


def fetch(url: str, into: Path = DOWNLOAD_DIR) -> Path:
    """Download a bundle to the data partition. Only http(s); the signature is RAUC's to check."""
    if (problem := url_problem(url)) is not None:
        raise UpdateError(f"{problem}, nor a bundle file on this device")
    into.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="download-", suffix=".raucb", dir=into)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
            expected = r.headers.get("Content-Length")
            if expected is not None and (problem := room_problem(int(expected), into)) is not None:
                raise UpdateError(f"cannot download {url}: {problem}")
            shutil.copyfileobj(r, out, 1 << 20)
            size = out.tell()
        if expected is not None and size != int(expected):
            raise UpdateError(f"download of {url} stopped after {size} of {expected} bytes")
        return Path(tmp)
    except (urllib.error.URLError, OSError) as exc:
        os.unlink(tmp)
        reason = (f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError)
                  else getattr(exc, "reason", None) or exc)
        raise UpdateError(f"cannot download {url}: {reason}") from None
    except BaseException:
        os.unlink(tmp)
        raise


def reboot_into_trial(boot_dir: Path = BOOT_DIR, reboot: tuple[str, ...] = REBOOT) -> tuple[str, ...]:
    """The reboot command that starts the slot on trial: with the firmware's one-shot tryboot
    flag on a Pi 4/5, a plain reboot where U-Boot counts the attempts."""
    return (*reboot, TRYBOOT_ARGUMENT) if (boot_dir / TRYBOOT_PENDING).exists() else reboot


def install(source: str, *, boot_dir: Path = BOOT_DIR, reboot: bool = True,
            reboot_command: tuple[str, ...] = REBOOT, download_dir: Path = DOWNLOAD_DIR) -> str:
    """Install a bundle (path or URL) into the other slot and, unless told not to, reboot into it
    on trial. Returns a sentence saying what was done. A bundle that is not signed by the fleet's
    key, is damaged or was made for another device is refused before anything is written."""
    downloaded = None
    if "://" in source:
        downloaded = fetch(source, download_dir)
        bundle = downloaded
    else:
        bundle = Path(source)
        if not bundle.is_file():
            raise UpdateError(f"{source}: no such bundle file")
    try:
        # RAUC's pre/post-install handlers make the boot partition writable for the install.
        _rauc("install", str(bundle.resolve()))
    finally:
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
    state = slot_state()
    done = f"installed into slot {state.primary}; it boots on trial next"
    if reboot:
        log.info("%s: rebooting", done)
        subprocess.run(list(reboot_into_trial(boot_dir, reboot_command)), check=True)
    return done


# --- the health check and the trial's verdict ------------------------------------------------

def check_daemon(control_socket: Path = CONTROL_SOCKET) -> str | None:
    """None if the appliance daemon answers and reports no error, else what is wrong."""
    from appliance.control import ControlClient, ControlError
    try:
        status = ControlClient(control_socket, timeout=10).status()
    except (ControlError, OSError) as exc:
        return f"the camera service does not answer: {exc}"
    if status.get("error"):
        return f"the camera service reports an error: {status['error']}"
    return None


def check_gadget(gadget: Path = GADGET) -> str | None:
    """None if the USB webcam gadget is bound to a device controller, else what is wrong."""
    try:
        udc = (gadget / "UDC").read_text().strip()
    except OSError:
        return f"the USB gadget is not set up ({gadget} missing)"
    return None if udc else "the USB gadget is not bound to a USB device controller"


def check_selftest() -> str | None:
    from appliance.selftest import run_selftest
    ok, lines = run_selftest()
    return None if ok else "the self-test failed: " + "; ".join(line for line in lines if line.startswith("FAIL"))


def health_problems(control_socket: Path = CONTROL_SOCKET, gadget: Path = GADGET) -> list[str]:
    checks = (lambda: check_daemon(control_socket), lambda: check_gadget(gadget), check_selftest)
    return [problem for check in checks if (problem := check()) is not None]


def rauc_boot_loader(system_conf: Path = RAUC_SYSTEM_CONF) -> str:
    """The `bootloader=` of RAUC's [system] section (uboot or custom)."""
    section = ""
    try:
        lines = system_conf.read_text().splitlines()
    except OSError as exc:
        raise UpdateError(f"cannot read RAUC's configuration {system_conf}: {exc.strerror}") from None
    for line in lines:
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[system]" and line.partition("=")[0].strip() == "bootloader":
            return line.partition("=")[2].strip()
    raise UpdateError(f"{system_conf} names no bootloader in its [system] section")


def unseen_boot(system_conf: Path = RAUC_SYSTEM_CONF, chosen: Path = DEVICE_TREE_CHOSEN) -> str | None:
    """None if the boot loader that RAUC's backend drives started this kernel (so a trial boot
    can be kept or given up), else a sentence saying it did not."""
    backend = rauc_boot_loader(system_conf)
    if backend not in BOOT_LOADER_MARKS:
        raise UpdateError(f"{system_conf}: unknown bootloader {backend!r} (expected "
                          f"{' or '.join(BOOT_LOADER_MARKS)})")
    mark, name = BOOT_LOADER_MARKS[backend]
    if (chosen / mark).exists():
        return None
    return (f"this kernel was not started by {name}, the boot loader that switches slots here "
            f"(no {mark} in {chosen}: e.g. a virtual machine booting the kernel directly)")


def confirm(*, control_socket: Path = CONTROL_SOCKET, gadget: Path = GADGET, boot_dir: Path = BOOT_DIR,
            reboot_command: tuple[str, ...] = REBOOT, system_conf: Path = RAUC_SYSTEM_CONF,
            chosen: Path = DEVICE_TREE_CHOSEN) -> str:
    """Judge the running slot if it is on trial: keep it (mark good) or give it up (mark bad and
    reboot into the previous slot). A slot that is already good is left alone: nothing is
    written; so is a boot the slot switch did not make (see unseen_boot). Returns a sentence
    saying what happened; an UpdateError when RAUC cannot tell or record the verdict."""
    if (why := unseen_boot(system_conf, chosen)) is not None:
        return f"no trial to judge: {why}; nothing done"
    state = slot_state()
    if state.booted_good:
        return f"slot {state.booted} is good; nothing to confirm"
    problems = health_problems(control_socket, gadget)
    if not problems:
        with writable_boot_partition(boot_dir):
            _rauc("status", "mark-good", "booted")
        return f"slot {state.booted} passed its health check and is now the good slot"
    reason = "; ".join(problems)
    log.error("slot %s failed its health check: %s", state.booted, reason)
    with writable_boot_partition(boot_dir):
        _rauc("status", "mark-bad", "booted")
    subprocess.run(list(reboot_command), check=True)
    return f"slot {state.booted} failed its health check ({reason}); rebooting into the previous slot"


# --- requests from the settings page ---------------------------------------------------------
# The web process has no privileges; it leaves a request in its spool directory (its own state
# directory) and blurcam-update-request.path starts `blurcam update run-request` as root.
# Files: request.json ({"url": URL}) and status.json (written here, read by the page).
SPOOL_DIR = Path("/var/lib/blurcam-web/update")
REQUEST_FILE = "request.json"
STATUS_FILE = "status.json"


def write_status(spool: Path, status: dict) -> None:
    from appliance.settings import write_atomically
    write_atomically(spool / STATUS_FILE, json.dumps(status).encode())
    os.chmod(spool / STATUS_FILE, 0o644)


def run_request(spool: Path = SPOOL_DIR, *, boot_dir: Path = BOOT_DIR, reboot_command: tuple[str, ...] = REBOOT,
                download_dir: Path = DOWNLOAD_DIR) -> str:
    """Carry out the page's request: download and install the bundle at its URL, then reboot
    into it on trial. What happened goes to status.json for the page."""
    request_file = spool / REQUEST_FILE
    try:
        request = json.loads(request_file.read_text())
    except (OSError, ValueError) as exc:
        raise UpdateError(f"no readable update request in {spool} ({exc})") from None
    request_file.unlink()  # taken: the path unit must not start us again for the same request
    url = request.get("url") if isinstance(request, dict) else None
    if not isinstance(url, str) or url_problem(url) is not None:
        write_status(spool, {"state": "failed", "error": "the request names no bundle URL"})
        raise UpdateError(f"{request_file}: names no bundle URL")
    write_status(spool, {"state": "installing", "source": url})
    try:
        done = install(url, boot_dir=boot_dir, reboot=False, download_dir=download_dir)
    except UpdateError as exc:
        write_status(spool, {"state": "failed", "source": url, "error": str(exc)})
        raise
    write_status(spool, {"state": "rebooting", "source": url, "message": done})
    subprocess.run(list(reboot_into_trial(boot_dir, reboot_command)), check=True)
    return done


# --- `blurcam update` ----------------------------------------------------------------------

def build_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="update_command", required=True)
    inst = sub.add_parser("install", help="install a bundle (file or http(s) URL) and reboot into it on trial")
    inst.add_argument("bundle")
    inst.add_argument("--no-reboot", action="store_true", help="install, but leave the reboot to later")
    sub.add_parser("status", help="which slot runs, which boots next, whether it is on trial (JSON)")
    sub.add_parser("confirm", help="judge a slot on trial: keep it if healthy, else go back (run at boot)")
    sub.add_parser("health", help="run the health check and print what is wrong, if anything")
    hawkbit = sub.add_parser("hawkbit", add_help=False,
                             help="poll the fleet's rollout server (hawkBit DDI) and install what it rolls out")
    hawkbit.add_argument("hawkbit_args", nargs=argparse.REMAINDER)
    req = sub.add_parser("run-request", help="carry out the settings page's update request (run by systemd)")
    req.add_argument("spool", nargs="?", type=Path, default=SPOOL_DIR)


def main(args: argparse.Namespace) -> int:
    try:
        if args.update_command == "install":
            print(install(args.bundle, reboot=not args.no_reboot))
        elif args.update_command == "status":
            state = slot_state()
            # A version of None: the slot still holds what the SD image was flashed with.
            print(json.dumps({"booted": state.booted, "primary": state.primary,
                              "on_trial": not state.booted_good, "versions": state.versions}))
        elif args.update_command == "confirm":
            print(confirm())
        elif args.update_command == "hawkbit":
            from appliance.hawkbit import main as hawkbit_main
            return hawkbit_main(args.hawkbit_args)
        elif args.update_command == "run-request":
            print(run_request(args.spool))
        elif args.update_command == "health":
            problems = health_problems()
            print("\n".join(problems) if problems else "healthy")
            return 1 if problems else 0
    except UpdateError as exc:
        print(f"blurcam update {args.update_command}: error: {exc}", file=sys.stderr)
        return 1
    return 0
