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


def test_a_device_joins_its_wave_gets_the_rollout_and_a_refused_bundle_is_reported(
        tmp_path, server, device, client_python):
    fleet_file = tmp_path / "fleet.toml"
    fleet_file.write_text(f'[update]\nhawkbit_url = "{server.url}"\n')
    other_key, other_cert = make_key(tmp_path, "someone-else")
    bundle = make_bundle(tmp_path, "2.1.0", other_key, other_cert)
    slots_before = device.slots_bytes()
    rebooted = tmp_path / "rebooted"
    client = subprocess.Popen(
        [client_python, "-m", "appliance.hawkbit", "--fleet-file", str(fleet_file), "--controller-id", "cam-0001",
         "--reboot-command", f"touch {rebooted}"],
        cwd=ROOT, env={**device.env, "PYTHONPATH": str(ROOT)},
        stdout=open(tmp_path / "client.log", "w"), stderr=subprocess.STDOUT)
    try:
        # The device registers itself with its board and version.
        deadline = time.monotonic() + 120
        while (dev := server.device("cam-0001")) is None or dev["hardware"] is None or not dev["sw_version"]:
            assert client.poll() is None and time.monotonic() < deadline, (tmp_path / "client.log").read_text()
            time.sleep(1)
        assert dev["hardware"]["model"] == COMPATIBLE and dev["sw_version"] == "0.0.0", dev

        # The operator's wave: the device in feed "wave-1", a rollout of the bundle to that feed.
        software = server.upload(bundle)
        server.api("PATCH", "/devices", {"devices": ["cam-0001"], "feed": "wave-1"})
        server.api("PUT", "/rollouts", {"name": "2.1.0 wave 1", "feed": "wave-1", "software_id": software})

        deadline = time.monotonic() + 180
        while (dev := server.device("cam-0001"))["last_state"] not in ("Error", "ERROR", "error"):
            assert client.poll() is None and time.monotonic() < deadline, \
                (dev, (tmp_path / "client.log").read_text()[-3000:])
            time.sleep(1)
        rollout = server.api("GET", "/rollouts")["rollouts"][0]
        assert rollout["failure_count"] == 1 and rollout["success_count"] == 0, rollout
        log = (tmp_path / "client.log").read_text()
        assert "downloading" in log and "signature" in log.lower(), log[-3000:]
        assert device.slots_bytes() == slots_before and not rebooted.exists()
        assert not list((tmp_path / "device").glob("**/hawkbit.raucb"))
    finally:
        client.terminate()
        client.wait(timeout=20)
