"""The control socket, tested against a real Unix socket."""

from __future__ import annotations

import json
import socket
import stat
import struct
import threading
import time

import cv2
import numpy as np
import pytest

from appliance.control import (MAX_CONNECTIONS, MAX_HEADER, MAX_PAYLOAD, MESSAGE_DEADLINE_S, ControlClient,
                               ControlError, ControlServer, recv_message, send_message)
from appliance.settings import SettingsError


def raw_connection(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def png_bytes(width=64, height=48) -> bytes:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (0, 128, 255)
    return cv2.imencode(".png", image)[1].tobytes()


def test_settings_round_trip_through_the_socket_and_persist(daemon, controller):
    client = ControlClient(daemon.path)
    assert client.get_settings()["blur_strength"] == 60
    updated = client.update_settings({"blur_strength": 25, "mirror": True})
    assert updated["blur_strength"] == 25 and updated["mirror"] is True
    assert controller.settings.current.blur_strength == 25
    saved = json.loads(controller.settings.path.read_text())
    assert saved == {"blur_strength": 25, "mirror": True}


def test_a_bad_change_raises_settings_error_naming_each_field_and_changes_nothing(daemon, controller):
    client = ControlClient(daemon.path)
    with pytest.raises(SettingsError) as caught:
        client.update_settings({"blur_strength": 500, "effect": "sparkles", "colour": 1})
    assert set(caught.value.errors) == {"blur_strength", "effect", "colour"}
    assert "1..100" in caught.value.errors["blur_strength"]
    assert caught.value.errors["colour"] == "unknown setting"
    assert controller.settings.current.blur_strength == 60
    assert not controller.settings.path.exists()


def test_a_change_that_is_not_an_object_is_a_settings_error(daemon):
    with pytest.raises(SettingsError) as caught:
        ControlClient(daemon.path).update_settings([1, 2])  # type: ignore[arg-type]
    assert "settings" in caught.value.errors


def test_status_and_preview_come_back_intact(daemon, controller):
    client = ControlClient(daemon.path)
    for view in ("original", "mask", "output"):
        image = cv2.imdecode(np.frombuffer(client.preview(view), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (360, 640, 3)
    status = client.status()
    assert status["state"] == "preview" and status["version"]
    assert status["frames_out"] > 0 and status["controls"] == controller.image_controls()


def test_an_unknown_preview_view_is_refused_with_the_allowed_views(daemon):
    with pytest.raises(SettingsError) as caught:
        ControlClient(daemon.path).preview("thermal")
    assert "original, mask, output" in caught.value.errors["view"]


def test_a_background_upload_is_validated_by_the_controller(daemon, controller):
    client = ControlClient(daemon.path)
    with pytest.raises(SettingsError) as caught:
        client.set_background(b"GIF89a but not really")
    assert "background" in caught.value.errors
    assert controller.settings.current.background == ""
    name = client.set_background(png_bytes())["background"]
    stored = cv2.imread(str(controller.state_dir / "backgrounds" / name))
    assert stored.shape == (48, 64, 3)


def test_the_socket_is_group_accessible_but_not_world_accessible(daemon):
    mode = stat.S_IMODE(daemon.path.stat().st_mode)
    assert mode == 0o660


def test_an_unreachable_daemon_is_a_clear_control_error(short_dir):
    client = ControlClient(short_dir / "nobody.sock")
    with pytest.raises(ControlError, match="camera service not running"):
        client.status()


def test_a_stopped_daemon_is_a_clear_control_error(daemon):
    client = ControlClient(daemon.path)
    assert client.ping()
    daemon.stop()
    with pytest.raises(ControlError, match="camera service not running"):
        client.get_settings()


def test_a_stale_socket_file_is_replaced_but_a_live_one_is_not_stolen(controller, short_dir):
    path = short_dir / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a crashed daemon leaves behind
    first = ControlServer(controller, path)
    first.start()
    try:
        assert ControlClient(path).ping()
        with pytest.raises(ControlError, match="already listening"):
            ControlServer(controller, path).start()
        assert ControlClient(path).ping()
    finally:
        first.stop()
    assert not path.exists()


def test_one_connection_carries_many_requests(daemon):
    with raw_connection(daemon.path) as sock:
        for _ in range(5):
            send_message(sock, {"op": "ping"})
            assert recv_message(sock)[0] == {"ok": True, "result": "pong"}


@pytest.mark.parametrize("header, reason", [
    ({"op": "format_disk"}, "op must be one of ping, get_settings, update_settings, status, "
                            "preview, set_background, factory_reset, reset_settings, backgrounds, "
                            "background_thumbnail; got 'format_disk'"),
    ({"op": "status", "args": [1]}, "args must be an object"),
    ({}, "got a NoneType"),
    ({"op": ["status"]}, "got a list"),
    ({"op": {"status": 1}}, "got a dict"),
    ({"op": 10 ** 30}, "got a int"),
])
def test_a_bad_request_gets_an_error_reply_and_the_connection_stays_usable(demo_daemon, header, reason):
    with raw_connection(demo_daemon.path) as sock:
        send_message(sock, header)
        reply, _ = recv_message(sock)
        assert reply["ok"] is False and reply["error"] == "bad_request"
        assert reason in reply["message"]
        send_message(sock, {"op": "ping"})
        assert recv_message(sock)[0]["result"] == "pong"


def framed(head: bytes) -> bytes:
    return struct.pack(">II", len(head), 0) + head


@pytest.mark.parametrize("raw, reason", [
    (struct.pack(">II", 9, 0) + b"not json!", "not valid JSON"),
    (framed(b'{"op": "ping", "args": ' + b"[" * 5000 + b"]" * 5000 + b"}"), "nested more than 32"),
    (framed(b'{"op": ' + b"9" * 5001 + b"}"), "a number with 5001 characters"),
    (framed(b'{"op": "update_settings", "args": {"changes": {"blur_strength": ' + b"1" * 5001 + b"}}}"),
     "a number with 5001 characters"),
    (framed(b'{"op": "ping", "args": {"x": NaN}}'), "NaN is not a JSON number"),
    (framed(b'{"op": "ping\xff"}'), "not UTF-8"),
    (struct.pack(">II", 2, 0) + b"[]", "header must be a JSON object"),
    (struct.pack(">II", MAX_HEADER + 1, 0), "header of"),
    (struct.pack(">II", 2, MAX_PAYLOAD + 1) + b"{}", "payload of"),
])
def test_a_malformed_message_gets_an_error_reply_and_never_kills_the_server(demo_daemon, raw, reason):
    with raw_connection(demo_daemon.path) as sock:
        sock.sendall(raw)
        reply, _ = recv_message(sock)
        assert reply["ok"] is False and reply["error"] == "bad_request"
        assert reason in reply["message"]
    assert ControlClient(demo_daemon.path).ping()


@pytest.mark.parametrize("args", [{}, {"changes": None}, {"changes": [1, 2]}, {"changes": "blur"}])
def test_update_settings_without_a_changes_object_is_a_settings_error_naming_it(demo_daemon, args):
    with raw_connection(demo_daemon.path) as sock:
        send_message(sock, {"op": "update_settings", "args": args})
        reply, _ = recv_message(sock)
    assert reply["ok"] is False and reply["error"] == "settings"
    assert "args.changes" in reply["errors"]["settings"]


def test_a_client_that_hangs_up_mid_message_does_not_hurt_the_server(daemon):
    with raw_connection(daemon.path) as sock:
        sock.sendall(struct.pack(">II", 100, 0) + b'{"op": ')
    assert ControlClient(daemon.path).ping()


def test_a_failing_controller_becomes_a_control_error_and_the_server_lives_on(daemon, controller):
    def broken(view, after):
        raise RuntimeError("sensor on fire")
    controller.preview_next = broken
    client = ControlClient(daemon.path)
    with pytest.raises(ControlError, match="RuntimeError: sensor on fire"):
        client.preview("output")
    assert client.ping()


def test_when_every_worker_is_answering_a_new_connection_is_told_the_server_is_busy(daemon, controller):
    release = threading.Event()
    controller.status = lambda: release.wait(10) and {"state": "idle"}
    callers = [threading.Thread(target=ControlClient(daemon.path, timeout=15).status)
               for _ in range(MAX_CONNECTIONS)]
    for caller in callers:
        caller.start()
    try:
        time.sleep(0.5)  # every worker is now inside status()
        with pytest.raises(ControlError, match="too many connections"):
            ControlClient(daemon.path).ping()
    finally:
        release.set()
        for caller in callers:
            caller.join()
    assert ControlClient(daemon.path).ping()


class Trickler:
    """Connections that each send a request one byte at a time: a slowloris on the control socket."""

    def __init__(self, path, count: int, every_s: float):
        request = framed(b'{"op": "ping"}')
        self.socks = [raw_connection(path) for _ in range(count)]
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(request, every_s), daemon=True)
        self._thread.start()

    def _run(self, request: bytes, every_s: float) -> None:
        for i in range(len(request) - 1):  # never the last byte
            for sock in list(self.socks):
                try:
                    sock.sendall(request[i:i + 1])
                except OSError:
                    self.socks.remove(sock)
                    self.closed_by_server += 1
            if self._stop.wait(every_s):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def test_a_request_that_trickles_in_slower_than_its_deadline_is_cut_off(demo_controller, short_dir):
    server = ControlServer(demo_controller, short_dir / "c.sock", message_deadline_s=0.5)
    server.start()
    try:
        with raw_connection(server.path) as sock:
            started = time.monotonic()
            sock.sendall(b"\x00")  # the first byte of a request, and then nothing more
            assert sock.recv(100) == b""  # the server hangs up ...
            assert time.monotonic() - started < 2.0  # ... at the deadline, not at the idle timeout
    finally:
        server.stop()


def test_an_idle_connection_is_closed_after_the_idle_timeout(demo_controller, short_dir):
    server = ControlServer(demo_controller, short_dir / "c.sock", idle_timeout_s=0.3)
    server.start()
    try:
        with raw_connection(server.path) as sock:
            started = time.monotonic()  # the idle time starts after the reply, so later than this
            send_message(sock, {"op": "ping"})
            assert recv_message(sock)[0]["result"] == "pong"
            assert sock.recv(100) == b""
            assert 0.3 <= time.monotonic() - started < 5.0
    finally:
        server.stop()


def test_slow_clients_on_every_worker_do_not_keep_the_page_from_its_answers(demo_controller, short_dir):
    # Deadlines far beyond the test: only making room for new connections can help here.
    server = ControlServer(demo_controller, short_dir / "c.sock", idle_timeout_s=60, message_deadline_s=60)
    server.start()
    slow = Trickler(server.path, MAX_CONNECTIONS, every_s=0.2)
    try:
        time.sleep(0.5)  # every worker now holds a half-sent request
        for _ in range(20):
            started = time.monotonic()
            assert ControlClient(server.path, timeout=5).get_settings()["blur_strength"] == 60
            assert time.monotonic() - started < 2.0
            time.sleep(0.05)
        assert slow.closed_by_server >= 1
    finally:
        slow.close()
        server.stop()


def test_the_daemon_default_deadlines_end_a_slowloris_within_seconds(demo_daemon):
    slow = Trickler(demo_daemon.path, MAX_CONNECTIONS, every_s=0.5)
    try:
        deadline = time.monotonic() + MESSAGE_DEADLINE_S + 3
        while slow.socks and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not slow.socks, f"{len(slow.socks)} slow connections still open"
    finally:
        slow.close()


def test_a_slow_daemon_is_a_timeout_error_not_a_hang(daemon, controller):
    release = threading.Event()
    controller.status = lambda: release.wait(5) and {}
    try:
        with pytest.raises(ControlError, match="did not answer 'status' within 0.2 s"):
            ControlClient(daemon.path, timeout=0.2).status()
    finally:
        release.set()


def test_an_answer_too_large_to_send_still_gets_its_promised_error_reply(daemon, controller):
    controller.status = lambda: {"huge": "x" * (MAX_HEADER + 1)}
    client = ControlClient(daemon.path)
    with pytest.raises(ControlError, match="reply not sent"):
        client.status()
    assert client.ping()


def test_requests_waiting_on_a_stuck_camera_do_not_hold_up_the_others(tmp_path, short_dir, monkeypatch):
    """Three previews wait inside the real daemon for a camera that does not start; status and
    settings are still answered at once on other connections (a single worker would say busy)."""
    from appliance.daemon import Controller
    from tests.support.faulty_camera import FaultyCamera
    camera = FaultyCamera()
    camera.start_gate = threading.Event()  # start() hangs until the test lets it go
    monkeypatch.setattr("appliance.sources.open_source", lambda spec: camera)
    controller = Controller(tmp_path / "state", source_spec="demo")
    server = ControlServer(controller, short_dir / "c.sock")
    server.start()
    waiting = [threading.Thread(target=lambda: ControlClient(server.path, timeout=30).call(
        "preview", {"view": "output"}), daemon=True) for _ in range(3)]
    try:
        for thread in waiting:
            thread.start()
        time.sleep(0.5)  # the previews are now inside the daemon, waiting for the camera
        for _ in range(5):
            started = time.monotonic()
            assert ControlClient(server.path, timeout=5).status()["state"]
            assert ControlClient(server.path, timeout=5).get_settings()["blur_strength"] == 60
            # Held up, they would wait for the camera (never, here) or the client's 5 s; a
            # loaded machine answers in over a second now and then.
            assert time.monotonic() - started < 3.0
        assert all(thread.is_alive() for thread in waiting)  # they really were still waiting
    finally:
        camera.start_gate.set()
        for thread in waiting:
            thread.join(30)
        server.stop()
        controller.close()
