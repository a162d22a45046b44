"""Signed bundles and the trial's verdict with the real RAUC (see rauc_harness.py for what runs here
and what only runs in the arm64 image VM): image-build/update/make-bundle.sh, dev-key.sh and
appliance/update.py's install refusal and confirm against RAUC's service and uboot backend.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance import update
from tests.image_build.rauc_harness import UPDATE_DIR, RaucSystem, make_bundle, make_key, missing_tools
from tests.support import capabilities

pytestmark = capabilities.needs(f"missing {missing_tools()}: tools/system-deps.sh as root" if missing_tools() else None)

TRIAL_B = "BOOT_ORDER=B A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n"  # B booted on its one attempt
GOOD_A = "BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    where = tmp_path_factory.mktemp("keys")
    return {"fleet": make_key(where, "fleet"), "other": make_key(where, "someone-else")}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, keys):
    where = tmp_path_factory.mktemp("bundles")
    good = make_bundle(where, "2.0.0", *keys["fleet"])
    truncated = where / "truncated.raucb"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    return {"good": good, "truncated": truncated,
            "other_key": make_bundle(where, "2.1.0", *keys["other"])}


@pytest.fixture
def device(tmp_path, keys, monkeypatch):
    system = RaucSystem(tmp_path, keyring=keys["fleet"][1])
    for name in ("PATH", "DBUS_SYSTEM_BUS_ADDRESS"):
        monkeypatch.setenv(name, system.env[name])
    yield system
    system.stop()


def rauc_info(bundle: Path, keyring: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["rauc", "info", f"--keyring={keyring}", str(bundle)], capture_output=True, text=True)


def test_a_bundle_signed_with_the_fleet_key_verifies_against_the_fleet_keyring(bundles, keys):
    info = rauc_info(bundles["good"], keys["fleet"][1])
    assert info.returncode == 0, info.stderr
    assert "Compatible:  'blurcam-test'" in info.stdout or "blurcam-test" in info.stdout
    assert "2.0.0" in info.stdout and "verity" in info.stdout


def test_a_bundle_signed_with_another_key_does_not_verify(bundles, keys):
    info = rauc_info(bundles["other_key"], keys["fleet"][1])
    assert info.returncode != 0
    assert "signature" in (info.stderr + info.stdout).lower()


@pytest.mark.parametrize("which, reason", [
    ("other_key", "signature"),
    ("truncated", "invalid bundle"),
])
def test_a_bad_bundle_is_refused_before_anything_is_written(device, bundles, which, reason):
    device.set_slot_state(GOOD_A)
    device.start(booted="A")
    slots_before, state_before = device.slots_bytes(), device.env_file.read_bytes()
    with pytest.raises(update.UpdateError) as refused:
        update.install(str(bundles[which]), boot_dir=device.work, reboot=False)
    assert reason in str(refused.value).lower(), refused.value
    assert device.slots_bytes() == slots_before  # not one byte of either slot
    assert device.env_file.read_bytes() == state_before  # nor the boot selection


def test_install_names_a_missing_bundle_or_an_unusable_url(device):
    with pytest.raises(update.UpdateError, match="no such bundle file"):
        update.install(str(device.work / "nope.raucb"), boot_dir=device.work, reboot=False)
    with pytest.raises(update.UpdateError, match="not an http.s. URL, nor a bundle file"):
        update.install("ftp://example.invalid/x.raucb", boot_dir=device.work, reboot=False)


@contextlib.contextmanager
def serving(handler):
    """An HTTP server on 127.0.0.1 for the length of the block; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def bundle_server(bundles):
    """The bundles over HTTP (the fleet's download server, for the page's URL install)."""
    with serving(functools.partial(http.server.SimpleHTTPRequestHandler,
                                   directory=str(bundles["good"].parent))) as url:
        yield url


def test_the_pages_url_request_is_downloaded_and_a_refusal_reported(device, bundles, bundle_server, tmp_path):
    device.set_slot_state(GOOD_A)
    device.start(booted="A")
    spool, downloads = tmp_path / "spool", tmp_path / "downloads"
    spool.mkdir()
    (spool / "request.json").write_text(json.dumps({"url": f"{bundle_server}/{bundles['other_key'].name}"}))
    slots_before = device.slots_bytes()
    with pytest.raises(update.UpdateError):
        update.run_request(spool, boot_dir=device.work, reboot_command=("touch", str(tmp_path / "rebooted")),
                           download_dir=downloads)
    status = json.loads((spool / "status.json").read_text())
    assert status["state"] == "failed" and "signature" in status["error"], status
    assert not (spool / "request.json").exists()  # taken, so systemd does not start it again
    assert list(downloads.iterdir()) == []  # the download does not stay on the data partition
    assert device.slots_bytes() == slots_before and not (tmp_path / "rebooted").exists()


def test_a_download_that_fails_is_reported(device, bundle_server, tmp_path):
    device.set_slot_state(GOOD_A)
    device.start(booted="A")
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "request.json").write_text(json.dumps({"url": f"{bundle_server}/no-such.raucb"}))
    with pytest.raises(update.UpdateError):
        update.run_request(spool, boot_dir=device.work, download_dir=tmp_path / "downloads")
    status = json.loads((spool / "status.json").read_text())
    assert status["state"] == "failed" and "cannot download" in status["error"] and "HTTP 404" in status["error"]


def test_a_bundle_larger_than_the_free_space_is_refused_before_a_byte_is_written(device, tmp_path):
    """The server's Content-Length says the bundle would not fit: the download never starts, so
    the data partition is not filled up (settings could not be saved then)."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    class TooBig(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(shutil.disk_usage(downloads).free + 1))
            self.end_headers()  # and no body: a download that started would fail differently

    with serving(TooBig) as url, pytest.raises(update.UpdateError, match="does not fit on the data partition"):
        update.fetch(f"{url}/big.raucb", downloads)
    assert list(downloads.iterdir()) == []


def test_a_download_leaves_room_for_settings(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    assert update.room_problem(1 << 20, tmp_path) is None
    problem = update.room_problem(free - update.DOWNLOAD_RESERVE // 2, tmp_path)
    assert problem is not None and "16 MiB stay for settings" in problem, problem


# --- the trial's verdict (`blurcam update confirm`) ------------------------------------------

@pytest.fixture
def appliance_daemon(short_dir):
    """The real daemon on its demo camera, with its control socket."""
    sock = short_dir / "control.sock"
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--source", "demo",
                             "--state-dir", str(short_dir / "state"), "--control-socket", str(sock),
                             "--fleet-file", str(short_dir / "no-fleet.toml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while update.check_daemon(sock) is not None:
        assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not come up"
        time.sleep(0.2)
    yield sock
    proc.terminate()
    proc.wait(timeout=20)


def gadget_dir(where: Path, udc: str) -> Path:
    """Stands in for /sys/kernel/config/usb_gadget/blurcam (configfs needs the gadget kernel
    modules, which run only in the VMs): its UDC file says which controller it is bound to."""
    gadget = where / "gadget"
    gadget.mkdir(exist_ok=True)
    (gadget / "UDC").write_text(udc + "\n")
    return gadget


def chosen_node(where: Path, *marks: str) -> Path:
    """Stands in for /proc/device-tree/chosen (the device tree the kernel was started with): U-Boot
    adds a u-boot,version property, the Pi 4/5 firmware a bootloader node; QEMU starting a kernel
    directly adds neither."""
    chosen = where / "chosen"
    chosen.mkdir(parents=True, exist_ok=True)
    (chosen / "bootargs").write_bytes(b"console=ttyAMA0,115200 rauc.slot=B\0")
    for mark in marks:
        if mark == "bootloader":
            (chosen / mark).mkdir()
            (chosen / mark / "tryboot").write_bytes(b"\0\0\0\1")
        else:
            (chosen / mark).write_bytes(b"2023.01+dfsg-2+deb12u3\0")
    return chosen


def test_a_freshly_installed_slot_is_the_next_boot_with_a_single_attempt(device):
    device.set_slot_state(GOOD_A)
    device.start(booted="A")
    subprocess.run(["rauc", "status", "mark-active", "other"], check=True, capture_output=True)  # install's last step
    assert device.slot_state() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "1"}
    assert update.slot_state().primary == "B"


def test_a_healthy_slot_on_trial_is_marked_good(device, appliance_daemon, tmp_path):
    device.set_slot_state(TRIAL_B)
    device.start(booted="B")
    assert update.slot_state().booted_good is False  # on trial
    said = update.confirm(control_socket=appliance_daemon, gadget=gadget_dir(tmp_path, "dummy_udc.0"),
                          boot_dir=device.work, reboot_command=("touch", str(tmp_path / "rebooted")),
                          system_conf=device.conf, chosen=chosen_node(tmp_path, "u-boot,version"))
    assert "now the good slot" in said
    assert device.slot_state() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}
    assert not (tmp_path / "rebooted").exists()


def test_a_slot_on_trial_failing_its_health_check_is_given_up_and_the_device_reboots(
        device, appliance_daemon, tmp_path):
    device.set_slot_state(TRIAL_B)
    device.start(booted="B")
    said = update.confirm(control_socket=appliance_daemon, gadget=gadget_dir(tmp_path, ""),
                          boot_dir=device.work, reboot_command=("touch", str(tmp_path / "rebooted")),
                          system_conf=device.conf, chosen=chosen_node(tmp_path, "u-boot,version"))
    assert "not bound to a USB device controller" in said
    # B leaves the boot order: the reboot starts A, the slot that was good before.
    assert device.slot_state() == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    assert (tmp_path / "rebooted").exists()


def test_a_slot_on_trial_without_its_daemon_is_given_up(device, tmp_path, short_dir):
    device.set_slot_state(TRIAL_B)
    device.start(booted="B")
    said = update.confirm(control_socket=short_dir / "nobody.sock", gadget=gadget_dir(tmp_path, "dummy_udc.0"),
                          boot_dir=device.work, reboot_command=("touch", str(tmp_path / "rebooted")),
                          system_conf=device.conf, chosen=chosen_node(tmp_path, "u-boot,version"))
    assert "camera service does not answer" in said
    assert device.slot_state()["BOOT_ORDER"] == "A"


def test_booting_a_good_slot_writes_nothing(device, tmp_path, short_dir):
    device.set_slot_state(GOOD_A)
    device.start(booted="A")
    before = device.env_file.read_bytes()
    said = update.confirm(control_socket=short_dir / "nobody.sock", gadget=gadget_dir(tmp_path, ""),
                          boot_dir=device.work, reboot_command=("touch", str(tmp_path / "rebooted")),
                          system_conf=device.conf, chosen=chosen_node(tmp_path, "u-boot,version"))
    assert "is good; nothing to confirm" in said
    assert device.env_file.read_bytes() == before
    assert not (tmp_path / "rebooted").exists()


def test_a_kernel_the_slot_switch_did_not_start_is_not_judged_and_nothing_is_written(device, tmp_path, short_dir):
    """QEMU booting slot B's kernel directly (the image's VM test): U-Boot did not take the trial's
    attempt, so there is no trial to keep or give up. Confirm says so, leaves the slot state alone
    and does not reboot, although the health check would fail (no daemon, no gadget)."""
    device.set_slot_state(TRIAL_B)
    device.start(booted="B")
    before = device.env_file.read_bytes()
    said = update.confirm(control_socket=short_dir / "nobody.sock", gadget=gadget_dir(tmp_path, ""),
                          boot_dir=device.work, reboot_command=("touch", str(tmp_path / "rebooted")),
                          system_conf=device.conf, chosen=chosen_node(tmp_path))
    assert said.startswith("no trial to judge: this kernel was not started by U-Boot"), said
    assert "u-boot,version" in said and "nothing done" in said
    assert device.env_file.read_bytes() == before
    assert not (tmp_path / "rebooted").exists()


def test_each_backend_looks_for_its_own_boot_loader(tmp_path):
    """U-Boot's backend needs U-Boot's mark, tryboot's (RAUC's custom backend) the Pi firmware's:
    the firmware starting a kernel without U-Boot on a Zero 2 W is not U-Boot's trial either."""
    for backend, mark, other in (("uboot", "u-boot,version", "bootloader"),
                                 ("tryboot", "bootloader", "u-boot,version")):
        conf = tmp_path / f"{backend}.conf"
        conf.write_text(subprocess.run([str(UPDATE_DIR / "rauc" / "render-system-conf.sh"), backend,
                                        "blurcam-test", "/dev/vda"], capture_output=True, text=True,
                                       check=True).stdout)
        assert update.unseen_boot(conf, chosen_node(tmp_path / f"{backend}-own", mark)) is None
        said = update.unseen_boot(conf, chosen_node(tmp_path / f"{backend}-other", other))
        assert said is not None and mark in said, said


def test_confirm_fails_loudly_when_it_cannot_tell_which_boot_loader_switches_slots(tmp_path):
    with pytest.raises(update.UpdateError, match="cannot read RAUC's configuration"):
        update.confirm(system_conf=tmp_path / "missing.conf", chosen=chosen_node(tmp_path))
    conf = tmp_path / "system.conf"
    conf.write_text("[system]\ncompatible=blurcam-test\nbootloader=grub\n")
    with pytest.raises(update.UpdateError, match="unknown bootloader 'grub'"):
        update.confirm(system_conf=conf, chosen=chosen_node(tmp_path, "u-boot,version"))


def signing_key(fleet_file: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(UPDATE_DIR / "signing-key.sh"), str(fleet_file), str(cache)],
                          capture_output=True, text=True)


def test_without_a_fleet_key_a_development_key_is_made_once_and_announced_loudly(tmp_path):
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text("[usb]\nproduct = \"X\"\n")
    first, second = signing_key(fleet_file, tmp_path / "cache"), signing_key(fleet_file, tmp_path / "cache")
    assert first.returncode == 0 and first.stdout == second.stdout  # the image's keyring matches later bundles
    key, cert, keyring = (Path(p) for p in first.stdout.split())
    assert key.stat().st_mode & 0o077 == 0 and cert == keyring
    assert "WARNING" in first.stderr and "DEVELOPMENT key" in first.stderr and "WARNING" in second.stderr


def test_the_fleet_key_is_used_when_named_and_checked(tmp_path, keys):
    fleet_file = tmp_path / "fleet.toml"
    (key, cert), (other_key, _) = keys["fleet"], keys["other"]
    fleet_file.write_text(f'[update]\nsigning_key = "{key}"\nsigning_cert = "{cert}"\n')
    chosen = signing_key(fleet_file, tmp_path / "cache")
    assert chosen.returncode == 0 and chosen.stdout.split() == [str(key), str(cert), str(cert)]
    assert "WARNING" not in chosen.stderr
    fleet_file.write_text(f'[update]\nsigning_key = "{other_key}"\nsigning_cert = "{cert}"\n')
    mismatched = signing_key(fleet_file, tmp_path / "cache")
    assert mismatched.returncode != 0 and "is not the key of" in mismatched.stderr
    fleet_file.write_text('[update]\nsigning_key = "missing.pem"\nsigning_cert = "c.pem"\n')
    missing = signing_key(fleet_file, tmp_path / "cache")
    assert missing.returncode != 0 and "missing.pem" in missing.stderr and "cannot be read" in missing.stderr
