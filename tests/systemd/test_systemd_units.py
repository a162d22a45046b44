"""The unit files are valid for systemd, locked down, and install into an image root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import capabilities

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "systemd"
UNITS = ("blurcam-gadget.service", "blurcam.service", "blurcam-web.service")
INSTALLED_VENV = "/opt/blurcam/venv"  # the image build installs the app there

needs_systemd_analyze = capabilities.needs(capabilities.tools("systemd-analyze", package="systemd"))


def exec_paths(unit: str) -> list[str]:
    text = (UNITS_DIR / unit).read_text()
    return re.findall(r"^Exec\w+=[-@:+!]*(\S+)", text, flags=re.MULTILINE)


def test_every_unit_starts_the_app_from_the_image_venv():
    for unit in UNITS:
        paths = exec_paths(unit)
        assert paths, f"{unit} has no Exec lines"
        app_paths = [p for p in paths if "blurcam" in Path(p).name]
        assert app_paths and all(p == f"{INSTALLED_VENV}/bin/blurcam" for p in app_paths), (unit, paths)


@needs_systemd_analyze
def test_systemd_analyze_verify_passes_on_every_unit_without_a_single_warning():
    """Runs in a private mount namespace where /opt/blurcam/venv is this project's venv, so
    verify checks the real entry point at its installed path (and the host stays untouched)."""
    capabilities.require(capabilities.tools("unshare", package="util-linux"))
    venv = Path(sys.prefix)
    assert (venv / "bin" / "blurcam").exists(), "the blurcam entry point is not installed in the venv"
    user_namespace = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = (
        'mount -t tmpfs tmpfs /opt && mkdir -p /opt/blurcam && ln -s "$1" /opt/blurcam/venv && shift '
        '&& exec systemd-analyze verify --man=no "$@"')
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", *user_namespace,
         "sh", "-c", script, "sh", str(venv), *(str(UNITS_DIR / u) for u in UNITS)],
        capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "unshare" in result.stderr and "Operation not permitted" in result.stderr:
        capabilities.require(f"cannot create a mount namespace here: {result.stderr.strip()}")
    # verify exits 0 even for unknown keys or bad values, so any output at all is a failure.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def security_report(unit: str) -> tuple[float, dict[str, dict]]:
    """(overall exposure, checks by name) from `systemd-analyze security --offline=true`."""
    path = str(UNITS_DIR / unit)
    text = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", path],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text)
    assert match, text
    checks = json.loads(subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--json=short", path],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    return float(match.group(1)), {check["name"]: check for check in checks}


@needs_systemd_analyze
def test_settings_page_service_exposure_is_at_most_2_5_and_it_sees_no_devices():
    exposure, checks = security_report("blurcam-web.service")
    print(f"blurcam-web.service exposure {exposure}")
    assert exposure <= 2.5
    assert checks["PrivateDevices="]["set"]
    assert checks["User=/DynamicUser="]["set"]
    assert checks["NoNewPrivileges="]["set"]


@needs_systemd_analyze
def test_pipeline_service_exposure_is_at_most_5_and_its_device_acl_is_the_camera_only():
    exposure, checks = security_report("blurcam.service")
    print(f"blurcam.service exposure {exposure}")
    assert exposure <= 5
    assert checks["User=/DynamicUser="]["set"]
    acl = checks["DeviceAllow="]["description"].split(":", 1)[1].split()
    # char-rtc:r is what ProtectClock= itself adds.
    assert sorted(acl) == ["char-dma_heap:rw", "char-media:rw", "char-rtc:r", "char-video4linux:rw"]


@needs_systemd_analyze
def test_gadget_service_keeps_root_but_little_else():
    exposure, checks = security_report("blurcam-gadget.service")
    print(f"blurcam-gadget.service exposure {exposure}")
    assert exposure <= 3
    assert checks["PrivateDevices="]["set"] and checks["PrivateNetwork="]["set"]


def test_install_script_puts_units_users_and_rule_into_an_image_root(tmp_path):
    capabilities.require(capabilities.tools("systemd-sysusers", "systemctl", package="systemd"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")

    subprocess.run([str(UNITS_DIR / "install.sh"), str(tmp_path)], check=True, capture_output=True, timeout=60)

    for unit in UNITS:
        assert (tmp_path / "usr/lib/systemd/system" / unit).read_text() == (UNITS_DIR / unit).read_text()
        wanted = tmp_path / "etc/systemd/system/multi-user.target.wants" / unit
        assert wanted.is_symlink(), f"{unit} is not enabled"
    assert (tmp_path / "usr/lib/udev/rules.d/90-blurcam-gadget.rules").exists()
    assert (tmp_path / "usr/lib/modules-load.d/blurcam.conf").read_text().count("libcomposite") == 1
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    assert users["blurcam"][5] == "/var/lib/blurcam/pipeline" and users["blurcam"][6].endswith("nologin")
    assert "blurcam-web" in users and int(users["blurcam-web"][2]) < 1000
    groups = [line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()]
    assert {"blurcam", "blurcam-web", "video"} <= set(groups)


def test_web_service_reaches_the_control_socket_through_the_pipeline_group():
    """The socket lives in the pipeline's RuntimeDirectory, group blurcam, mode 0750/umask 0007."""
    pipeline = (UNITS_DIR / "blurcam.service").read_text()
    web = (UNITS_DIR / "blurcam-web.service").read_text()
    assert re.search(r"^RuntimeDirectory=blurcam$", pipeline, re.M)
    assert re.search(r"^Group=blurcam$", pipeline, re.M)
    assert re.search(r"^SupplementaryGroups=blurcam$", web, re.M)
    socket_arg = "--control-socket /run/blurcam/control.sock"
    assert socket_arg in pipeline and socket_arg in web


def test_web_service_may_read_the_interface_addresses_it_trusts_clients_by():
    """web/network.py lists the USB link's addresses with psutil.net_if_addrs (getifaddrs, over
    netlink): without AF_NETLINK every login and every Host check from a non-loopback client
    failed with EAFNOSUPPORT (a 500), as the arm64 image VM showed."""
    web = (UNITS_DIR / "blurcam-web.service").read_text()
    allowed = re.search(r"^RestrictAddressFamilies=(.*)$", web, re.M)
    assert allowed and "AF_NETLINK" in allowed.group(1).split(), allowed
