"""Boot a VM with systemd as PID 1 on this machine's own root and watch the appliance run.

The kernel and its initramfs come from tests/support/vm's harness; this test appends its own /init
(vm_init.sh) that overlays a tmpfs on the 9p root, installs the units with systemd/install.sh
exactly as the image build does, and hands over to systemd. Inside, vm_check.py (a oneshot unit)
logs in to the settings page, kills the pipeline, plugs in a UDC late and records what systemd
did in results.json; the assertions are here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import capabilities
from tests.support.vm import vmlib  # the UVC VM harness: kernel download, base initramfs

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SUPPORT = REPO / "tests" / "support" / "systemd"

pytestmark = pytest.mark.vm
BOOT_TIMEOUT_S = 1500
CACHE = REPO / "tests" / ".cache" / "systemd-vm"


def udev_package() -> Path:
    """Debian's udev .deb (build containers often lack udev; the VM unpacks it in its overlay)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob("udev_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", "udev"], cwd=CACHE, check=True, capture_output=True, timeout=300)
        found = sorted(CACHE.glob("udev_*.deb"))
    return found[-1]


def build_initrd(base: Path, modules_dir: Path, version: str) -> Path:
    """tests/support/vm's initramfs with this test's /init and the overlay module appended: the kernel
    unpacks concatenated cpio archives in order, later files replacing earlier ones."""
    out = vmlib.CACHE / f"initramfs-systemd-{version}.cpio"
    inputs = (base, SUPPORT / "vm_init.sh")
    if out.exists() and all(out.stat().st_mtime >= p.stat().st_mtime for p in inputs):
        return out
    with tempfile.TemporaryDirectory(dir=vmlib.CACHE) as tmp:
        root = Path(tmp)
        shutil.copy2(SUPPORT / "vm_init.sh", root / "init")
        (root / "init").chmod(0o755)
        shutil.copy2(modules_dir / "kernel/fs/overlayfs/overlay.ko", root / "overlay.ko")
        extra = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=b"init\noverlay.ko\n",
                               capture_output=True, check=True).stdout
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(base.read_bytes() + extra)
    os.replace(tmp_out, out)
    return out


@pytest.fixture(scope="module")
def vm_results() -> dict:
    capabilities.require(vmlib.unavailable())
    vmlinuz, modules_dir, version = vmlib.prepare_kernel()
    udev = udev_package()
    initrd = build_initrd(vmlib.build_initramfs(modules_dir, version), modules_dir, version)
    # Not under /tmp: the VM mounts its own tmpfs there.
    run = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    # no_timer_check: under TCG on a busy host the kernel may wrongly find the IO-APIC timer
    # broken and panic at boot ("IO-APIC + timer doesn't work!").
    cmdline = (f"console=ttyS0 panic=-1 loglevel=4 no_timer_check systemd.unit=multi-user.target "
               f"systemd.show_status=1 systemd.journald.forward_to_console=1 "
               f"blurcam_run={run} blurcam_repo={REPO} blurcam_modules={modules_dir} "
               f"blurcam_udev={udev}")
    cmd = ["qemu-system-x86_64", "-machine", "pc", "-cpu", "max", "-m", "2048", "-smp", "2",
           "-nographic", "-no-reboot", "-nic", "none", "-kernel", str(vmlinuz), "-initrd", str(initrd),
           "-append", cmdline,
           "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,multidevs=remap"]
    with open(run / "console.log", "wb") as console:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                       timeout=BOOT_TIMEOUT_S)
    results = run / "results.json"
    if not results.exists():
        tail = (run / "console.log").read_text(errors="replace")[-4000:]
        pytest.fail(f"the VM wrote no results; console tail:\n{tail}")
    data = json.loads(results.read_text())
    print(f"VM run dir {run}; in-VM checks took {data['elapsed_s']} s")
    return data


def monotonic(unit_props: dict, name: str) -> int:
    return int(unit_props[name])


def test_the_three_services_start_in_order_under_systemd(vm_results):
    boot = vm_results["boot"]
    pipeline, web = boot["blurcam.service"], boot["blurcam-web.service"]
    assert vm_results["pipeline_active"]
    assert pipeline["ActiveState"] == "active" and web["ActiveState"] == "active"
    assert pipeline["User"] == "blurcam" and web["User"] == "blurcam-web"
    # No UDC at boot: the gadget unit is skipped by its condition, not failed.
    gadget = boot["blurcam-gadget.service"]
    assert gadget["ConditionResult"] == "no" and gadget["Result"] == "success"
    # Type=notify: the web process starts only after the pipeline said READY=1.
    assert monotonic(web, "ExecMainStartTimestampMonotonic") >= monotonic(pipeline, "ActiveEnterTimestampMonotonic") > 0
    assert pipeline["StatusText"].startswith("idle")


def test_the_settings_page_answers_and_reaches_the_sandboxed_pipeline(vm_results):
    assert vm_results["page_status"] == 200
    assert vm_results["login_status"] == 200
    status = vm_results["api_status"]
    assert status["code"] == 200, status
    assert status["body"]["state"] == "idle" and status["body"]["version"]



def test_the_sandboxed_pipeline_opens_the_camera_and_serves_a_preview(vm_results):
    preview = vm_results["preview"]
    assert preview["code"] == 200 and preview["jpeg"] and preview["bytes"] > 1000, preview
    assert vm_results["api_status_after_preview"]["source"].startswith("v4l2")


def test_watchdog_pings_reach_systemd(vm_results):
    assert vm_results["boot"]["blurcam.service"]["WatchdogUSec"] in ("10s", "10000000")
    assert vm_results["watchdog_advanced_us"] > 0


def test_a_killed_pipeline_is_restarted_by_systemd(vm_results):
    restart = vm_results["restart"]
    after = restart["after"]
    assert after is not None, restart
    assert int(after["MainPID"]) != restart["old_pid"] and after["ActiveState"] == "active"
    assert int(after["NRestarts"]) == 1
    print(f"pipeline back (READY again) {restart['seconds']} s after SIGKILL")


def test_a_late_udc_brings_up_the_gadget_and_the_pipeline_serves_it(vm_results):
    late = vm_results["late_udc"]
    assert late["gadget"] is not None and late["gadget"]["ActiveState"] == "active", late
    assert late["bound_udc"] == ["usbip-vudc.0"]
    assert late["pipeline_after"] is not None, late
    assert late["serving_uvc"]


def test_the_journal_gets_levels(vm_results):
    priorities = vm_results["journal"]["priorities"]
    assert 6 in priorities and (3 in priorities or 4 in priorities)  # info and errors/warnings


def test_the_journal_gets_no_line_per_frame(vm_results):
    journal = vm_results["journal"]
    # Minutes of running, a preview at several fps and two restarts: a few dozen lines at most.
    assert journal["entries"] < 200, journal


def test_stopping_the_pipeline_is_clean_and_quick(vm_results):
    stop = vm_results["stop"]
    assert stop["after"]["ActiveState"] == "inactive" and stop["after"]["Result"] == "success", stop
    print(f"systemctl stop blurcam.service took {stop['seconds']} s")
    assert stop["seconds"] < 5
