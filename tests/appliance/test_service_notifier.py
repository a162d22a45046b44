"""Notifier speaks the sd_notify protocol to a real datagram socket, with and without libsystemd."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from appliance import service
from appliance.service import Notifier
from tests.support import capabilities
from tests.support.systemd.notify_socket import NotifySocket

has_libsystemd = service._sd_daemon is not None
needs_libsystemd = capabilities.needs(capabilities.module("systemd.daemon", capabilities.SYSTEMD_PYTHON))


@pytest.fixture
def listener(tmp_path):
    sock = NotifySocket.bind_path(tmp_path / "notify")
    yield sock
    sock.close()


def test_without_notify_socket_every_call_is_a_silent_no_op():
    notifier = Notifier(environ={}, use_libsystemd=False)
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
    assert notifier.send("READY=1") is False
    assert notifier.watchdog_interval() is None


def test_raw_datagrams_carry_ready_status_watchdog_and_stopping(listener):
    notifier = Notifier(environ={"NOTIFY_SOCKET": listener.address}, use_libsystemd=False)
    notifier.ready()
    notifier.status("streaming 1280x720 MJPEG,\n 29.8 fps")
    notifier.watchdog()
    notifier.stopping()
    got = [listener.receive(1.0).fields for _ in range(4)]
    assert got == [{"READY": "1"}, {"STATUS": "streaming 1280x720 MJPEG, 29.8 fps"},
                   {"WATCHDOG": "1"}, {"STOPPING": "1"}]


def test_an_abstract_socket_written_with_a_leading_at_sign_is_reached():
    listener = NotifySocket.bind_abstract(f"blurcam-test-{uuid.uuid4().hex}")
    try:
        Notifier(environ={"NOTIFY_SOCKET": listener.address}, use_libsystemd=False).ready()
        assert listener.receive(1.0).fields == {"READY": "1"}
    finally:
        listener.close()


def test_a_vanished_manager_is_reported_once_and_never_raises(tmp_path, caplog):
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}, use_libsystemd=False)
    for _ in range(5):
        assert notifier.send("WATCHDOG=1") is False
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "gone") in warnings[0].getMessage()


@pytest.mark.parametrize("environ, interval", [
    ({}, None),
    ({"WATCHDOG_USEC": "2000000"}, 2.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_comes_from_watchdog_usec_for_this_process_only(environ, interval):
    assert Notifier(environ=environ, use_libsystemd=False).watchdog_interval() == interval


def test_a_malformed_watchdog_usec_is_named_in_a_warning(caplog):
    Notifier(environ={"WATCHDOG_USEC": "soon"}, use_libsystemd=False).watchdog_interval()
    assert "WATCHDOG_USEC='soon'" in caplog.text


@needs_libsystemd
def test_libsystemd_is_used_when_installed_and_reaches_the_same_socket(listener):
    """In a child process, because libsystemd reads $NOTIFY_SOCKET from the real environment."""
    code = ("from appliance.service import Notifier\n"
            "n = Notifier()\n"
            "assert n.uses_libsystemd\n"
            "n.ready(); n.status('idle, 0.0 fps'); n.watchdog()\n")
    env = {**os.environ, "NOTIFY_SOCKET": listener.address}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    got = [listener.receive(1.0).fields for _ in range(3)]
    assert got == [{"READY": "1"}, {"STATUS": "idle, 0.0 fps"}, {"WATCHDOG": "1"}]
