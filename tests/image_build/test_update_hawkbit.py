"""Fleet rollouts through hawkBit's device API: goosebit (a hawkBit-DDI server from PyPI) on
127.0.0.1, the device's client (appliance/hawkbit.py on rauc-hawkbit) and RAUC's service with the
image's configuration (rauc_harness.py). The device registers with its board and version, is put
in a rollout wave ("feed"), downloads the wave's bundle and hands it to RAUC; the result goes back
to the server. Here RAUC refuses the bundle (another key; and this machine's kernel could not mount
a good one): the refusal reaches the server and nothing is written. The successful path, with the
reboot into the new slot, runs inside the arm64 image VM.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.image_build import hawkbit_harness
from tests.image_build.rauc_harness import COMPATIBLE, ROOT, RaucSystem, make_bundle, make_key, missing_tools
from tests.support import capabilities

pytestmark = [
    capabilities.needs(f"missing {missing_tools()}: tools/system-deps.sh as root" if missing_tools() else None),
    capabilities.needs(f"missing {hawkbit_harness.missing()}" if hawkbit_harness.missing() else None),
]


@pytest.fixture(scope="module")
def client_python() -> str:
    env = hawkbit_harness.venv("hawkbit-client", hawkbit_harness.SYSTEM_PYTHON, hawkbit_harness.CLIENT,
                               hawkbit_harness.CLIENT_NO_DEPS, system_site=True)
    return str(env / "bin" / "python")


@pytest.fixture
def server(tmp_path):
    goosebit = hawkbit_harness.Goosebit(tmp_path / "goosebit")
    goosebit.start()
    yield goosebit
    goosebit.stop()


@pytest.fixture
def device(tmp_path):
    key, cert = make_key(tmp_path, "fleet")
    system = RaucSystem(tmp_path / "device", keyring=cert)
    system.set_slot_state("BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n")
    system.start(booted="A")
    yield system
    system.stop()


def on_tmpfs(folder, options: str, command: list[str]) -> list[str]:
    """`command` run in a mount namespace of its own with a tmpfs (mount `options`) on `folder`:
    the download folder's free space and writability as a test needs them, seen by nothing else."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o {options} blurcam-test "$0" && exec "$@"', str(folder), *command]


def roll_out(tmp_path, server, device, client_python, download_dir, in_namespace: str | None = None,
             read_only_before_rollout: bool = False):
    """The device's client polling `server` (downloading into `download_dir`, mounted first with
    `in_namespace`'s tmpfs options in a mount namespace of its own when given, and made read-only
    there once the device has registered if asked), put in wave-1, and a bundle signed with another
    key rolled out to the wave. Waits for the device's error state; returns the rollout, the
    client's log and the slots' bytes before."""
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(f'[update]\nhawkbit_url = "{server.url}"\n')
    other_key, other_cert = make_key(tmp_path, "someone-else")
    bundle = make_bundle(tmp_path, "2.1.0", other_key, other_cert)
    slots_before = device.slots_bytes()
    command = [client_python, "-m", "appliance.hawkbit", "--fleet-file", str(fleet_file), "--controller-id", "cam-0001",
               "--download-dir", str(download_dir), "--reboot-command", f"touch {tmp_path / 'rebooted'}"]
    if in_namespace is not None:
        download_dir.mkdir()
        command = on_tmpfs(download_dir, in_namespace, command)
    client = subprocess.Popen(command, cwd=ROOT, env={**device.env, "PYTHONPATH": str(ROOT)},
                              stdout=open(tmp_path / "client.log", "w"), stderr=subprocess.STDOUT)
    try:
        # The device registers itself with its board and version.
        deadline = time.monotonic() + 120
        while (dev := server.device("cam-0001")) is None or dev["hardware"] is None or not dev["sw_version"]:
            assert client.poll() is None and time.monotonic() < deadline, (tmp_path / "client.log").read_text()
            time.sleep(1)
        assert dev["hardware"]["model"] == COMPATIBLE and dev["sw_version"] == "0.0.0", dev
        if read_only_before_rollout:  # as the kernel does to a filesystem with errors (errors=remount-ro)
            subprocess.run(["nsenter", "--mount", "--target", str(client.pid), "mount", "-o", "remount,ro",
                            str(download_dir)], check=True)

        # The operator's wave: the device in feed "wave-1", a rollout of the bundle to that feed.
        software = server.upload(bundle)
        server.api("PATCH", "/devices", {"devices": ["cam-0001"], "feed": "wave-1"})
        server.api("PUT", "/rollouts", {"name": "2.1.0 wave 1", "feed": "wave-1", "software_id": software})

        deadline = time.monotonic() + 180
        while (dev := server.device("cam-0001"))["last_state"] not in ("Error", "ERROR", "error"):
            assert client.poll() is None and time.monotonic() < deadline, \
                (dev, (tmp_path / "client.log").read_text()[-3000:])
            time.sleep(1)
        return server.api("GET", "/rollouts")["rollouts"][0], (tmp_path / "client.log").read_text(), slots_before
    finally:
        client.terminate()
        client.wait(timeout=20)


def test_a_device_joins_its_wave_gets_the_rollout_and_a_refused_bundle_is_reported(
        tmp_path, server, device, client_python):
    downloads = tmp_path / "downloads"
    rollout, log, slots_before = roll_out(tmp_path, server, device, client_python, downloads)
    assert rollout["failure_count"] == 1 and rollout["success_count"] == 0, rollout
    assert "downloading" in log and "signature" in log.lower(), log[-3000:]
    assert device.slots_bytes() == slots_before and not (tmp_path / "rebooted").exists()
    assert downloads.is_dir() and list(downloads.iterdir()) == []  # the refused bundle is not kept


NAMESPACES = capabilities.root("a tmpfs in a mount namespace of the client's own")


@capabilities.needs(NAMESPACES)
def test_a_bundle_that_would_fill_the_data_partition_is_not_downloaded_and_the_server_is_told(
        tmp_path, server, device, client_python):
    rollout, log, slots_before = roll_out(tmp_path, server, device, client_python, tmp_path / "downloads",
                                          in_namespace="size=8m")
    assert rollout["failure_count"] == 1, rollout
    assert "does not fit on the data partition" in log and "stay for settings" in log, log[-3000:]
    assert "downloading" not in log
    assert device.slots_bytes() == slots_before and not (tmp_path / "rebooted").exists()


@capabilities.needs(NAMESPACES)
def test_a_download_the_device_cannot_write_is_reported_not_retried_for_ever(
        tmp_path, server, device, client_python):
    rollout, log, slots_before = roll_out(tmp_path, server, device, client_python, tmp_path / "downloads",
                                          in_namespace="size=64m", read_only_before_rollout=True)
    assert rollout["failure_count"] == 1, rollout
    assert "the bundle could not be saved: the device's storage is read-only" in log, log[-3000:]
    assert device.slots_bytes() == slots_before and not (tmp_path / "rebooted").exists()


@capabilities.needs(NAMESPACES)
def test_a_client_that_could_not_save_a_bundle_says_so_and_does_not_start(tmp_path, device, client_python):
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text('[update]\nhawkbit_url = "http://127.0.0.1:9"\n')
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    done = subprocess.run(
        on_tmpfs(downloads, "size=64m,ro", [client_python, "-m", "appliance.hawkbit", "--fleet-file", str(fleet_file),
                                            "--download-dir", str(downloads)]),
        cwd=ROOT, env={**device.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{downloads}: no bundle can be saved there (the device's storage is read-only); not polling" \
        in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
