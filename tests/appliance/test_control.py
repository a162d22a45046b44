"""The control socket, tested against a real Unix socket."""

from __future__ import annotations

import json
import socket
import stat
import struct

import cv2
import numpy as np
import pytest

from appliance.control import (MAX_CONNECTIONS, MAX_HEADER, MAX_PAYLOAD, ControlClient, ControlError,
                               ControlServer, recv_message, send_message)
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


def test_status_and_preview_come_back_intact(daemon):
    client = ControlClient(daemon.path)
    status = client.status()
    assert status["fps"] == 30.0 and status["version"]
    for view in ("original", "mask", "output"):
        image = cv2.imdecode(np.frombuffer(client.preview(view), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (180, 320, 3)


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
    assert client.set_background(png_bytes())["background"] == "background.jpg"
    stored = cv2.imread(str(controller.state_dir / "background.jpg"))
    assert stored.shape == (720, 1280, 3)


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
    ({"op": "format_disk"}, "unknown op 'format_disk'"),
    ({"op": "status", "args": [1]}, "args must be an object"),
    ({}, "unknown op None"),
])
def test_a_bad_request_gets_an_error_reply_and_the_connection_stays_usable(daemon, header, reason):
    with raw_connection(daemon.path) as sock:
        send_message(sock, header)
        reply, _ = recv_message(sock)
        assert reply == {"ok": False, "error": "bad_request", "message": reason}
        send_message(sock, {"op": "ping"})
        assert recv_message(sock)[0]["result"] == "pong"


@pytest.mark.parametrize("raw, reason", [
    (struct.pack(">II", 9, 0) + b"not json!", "header is not JSON"),
    (struct.pack(">II", 2, 0) + b"[]", "header must be a JSON object"),
    (struct.pack(">II", MAX_HEADER + 1, 0), "header of"),
    (struct.pack(">II", 2, MAX_PAYLOAD + 1) + b"{}", "payload of"),
])
def test_a_malformed_message_gets_an_error_reply_and_never_kills_the_server(daemon, raw, reason):
    with raw_connection(daemon.path) as sock:
        sock.sendall(raw)
        reply, _ = recv_message(sock)
        assert reply["ok"] is False and reply["error"] == "bad_request"
        assert reason in reply["message"]
    assert ControlClient(daemon.path).ping()


def test_a_client_that_hangs_up_mid_message_does_not_hurt_the_server(daemon):
    with raw_connection(daemon.path) as sock:
        sock.sendall(struct.pack(">II", 100, 0) + b'{"op": ')
    assert ControlClient(daemon.path).ping()


def test_a_failing_controller_becomes_a_control_error_and_the_server_lives_on(daemon, controller):
    def broken(view):
        raise RuntimeError("sensor on fire")
    controller.preview = broken
    client = ControlClient(daemon.path)
    with pytest.raises(ControlError, match="RuntimeError: sensor on fire"):
        client.preview("output")
    assert client.ping()


def test_connections_beyond_the_limit_are_told_the_server_is_busy(daemon):
    held = [raw_connection(daemon.path) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # make sure every one has been accepted and holds a slot
            send_message(sock, {"op": "ping"})
            recv_message(sock)
        with pytest.raises(ControlError, match="too many connections"):
            ControlClient(daemon.path).ping()
    finally:
        for sock in held:
            sock.close()
    for _ in range(50):  # the slots free up as the server notices the closed connections
        try:
            assert ControlClient(daemon.path).ping()
            break
        except ControlError:
            import time
            time.sleep(0.02)
    else:
        pytest.fail("the server never accepted a connection again")


def test_a_slow_daemon_is_a_timeout_error_not_a_hang(daemon, controller):
    import threading
    release = threading.Event()
    controller.status = lambda: release.wait(5) and {}
    try:
        with pytest.raises(ControlError, match="did not answer 'status' within 0.2 s"):
            ControlClient(daemon.path, timeout=0.2).status()
    finally:
        release.set()
