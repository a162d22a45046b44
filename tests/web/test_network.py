"""web/network.py: the device's own names, and who is at the other end of the USB cable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import capabilities
from web.network import DeviceNetwork, host_of, same_origin


@pytest.mark.parametrize("header, host", [
    ("Cam.Local:80", "cam.local"), ("cam.local.", "cam.local"), ("[fe80::1]:8080", "fe80::1"),
    ("192.168.1.5", "192.168.1.5"), ("[::1]", "::1"),
])
def test_host_of_takes_the_name_without_port_case_or_trailing_dot(header, host):
    assert host_of(header) == host


def test_same_origin_needs_the_very_host_and_port_the_request_went_to():
    assert same_origin("http://cam.local", "cam.local")
    assert same_origin("https://CAM.local:8443", "cam.local:8443")
    assert not same_origin("http://cam.local:8080", "cam.local")
    assert not same_origin("null", "cam.local")
    assert not same_origin("file://", "cam.local")


def test_a_renamed_device_answers_to_its_new_name_after_the_refresh(monkeypatch):
    name = ["blurcam-aaaaaa"]
    net = DeviceNetwork(hostname=lambda: name[0], networks=dict)
    assert net.is_own_host("blurcam-aaaaaa.local")
    name[0] = "blurcam-bbbbbb"
    monkeypatch.setattr("web.network.REFRESH_S", 0.0)
    assert net.is_own_host("blurcam-bbbbbb.local") and not net.is_own_host("blurcam-aaaaaa.local")


@capabilities.needs(capabilities.root("a network namespace")
                    or capabilities.tools("unshare", "ip", package="util-linux, iproute2"))
def test_a_client_on_the_usb_link_is_local_and_the_link_address_is_an_own_host():
    """A real usb0 interface (one end of a veth pair, in a network namespace of its own) as the
    NCM link, and a LAN interface beside it."""
    check = textwrap.dedent("""
        from web.network import DeviceNetwork
        net = DeviceNetwork(hostname=lambda: "blurcam-1a2b3c")
        print(net.is_local_link("10.55.0.2"), net.is_local_link("192.168.7.2"),
              net.is_own_host("10.55.0.1:80"), net.is_own_host("192.168.7.1"))
    """)
    script = ("ip link add usb0 type veth peer name eth0 && ip addr add 10.55.0.1/24 dev usb0 && "
              f"ip addr add 192.168.7.1/24 dev eth0 && exec {sys.executable} -c '{check}'")
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, check=False,
                            timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 0, result.stderr
    # USB link client: local; LAN client: not; both interface addresses are the device's own.
    assert result.stdout.split() == ["True", "False", "True", "True"]
