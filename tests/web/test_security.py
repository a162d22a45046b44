"""What an attacker tries against the page and its API, against the real daemon (demo camera)."""

from __future__ import annotations

import io
import json
import re
import resource
import socket
import threading
import time
from urllib.parse import unquote

import psutil
import pytest
from werkzeug.security import generate_password_hash

from appliance.control import MAX_HEADER
from appliance.settings import RESOLUTIONS
from tests.support.pictures import encoded, jpeg_claiming, png_claiming
from web import MAX_BODY_BYTES, create_app
from web.auth import LoginThrottle

from .conftest import PASSWORD, log_in


@pytest.fixture
def web_daemon(demo_daemon):
    return demo_daemon


def own_lan_address() -> str | None:
    for name, addrs in psutil.net_if_addrs().items():
        for addr in addrs:
            if addr.family == socket.AF_INET and name != "lo":
                return addr.address
    return None


# ---- open redirect after login ----

def form_token(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.mark.parametrize("encoded", [
    "/%09/evil.example", "/%0d/x", "/%0a/evil.example", "//evil.example", "/%5Cevil.example",
    "https://evil.example/", "/%2F/evil.example", "%20//evil.example", "javascript:alert(1)",
])
def test_login_never_redirects_to_another_site_or_fails_on_a_crafted_next(client, encoded):
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": form_token(client),
                                           "next": unquote(encoded)})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    again = client.get(f"/login?next={encoded}")  # logged in already: straight on
    assert again.status_code == 302 and again.headers["Location"] == "/"


def test_login_still_returns_to_the_page_the_user_came_from(client):
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": form_token(client),
                                           "next": "/?view=mask"})
    assert response.headers["Location"] == "/?view=mask"


# ---- DNS rebinding: only the device's own names ----

@pytest.mark.parametrize("path", ["/login", "/api/status", "/static/app.js"])
def test_a_foreign_host_name_is_refused_on_every_path(client, path):
    response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert b"evil.example" in response.data and b"not a name or address of this device" in response.data


def test_a_foreign_host_name_cannot_log_in_or_use_the_api(client, demo_controller):
    response = client.post("/api/login", json={"password": PASSWORD}, headers={"Host": "evil.example:80"})
    assert response.status_code == 400 and "Host" in response.json["errors"]
    assert "Set-Cookie" not in response.headers
    user = log_in(client)
    changed = user.put("/api/settings", json={"mirror": True}, headers={"Host": "evil.example"})
    assert changed.status_code == 400 and demo_controller.settings.current.mirror is False


def test_the_device_answers_to_its_own_names_and_addresses(client):
    hostname = socket.gethostname()
    names = ["localhost", "localhost:8080", "127.0.0.1", "127.0.0.1:80", "[::1]:8080", hostname,
             f"{hostname.split('.')[0]}.local", f"{hostname.upper()}.LOCAL.:80"]
    if own_lan_address():
        names.append(f"{own_lan_address()}:80")
    for host in names:
        assert client.get("/login", headers={"Host": host}).status_code == 200, host


def test_names_the_operator_allows_are_served_too(make_app):
    client = make_app(ALLOWED_HOSTS=["cam.example.org"]).test_client()
    assert client.get("/login", headers={"Host": "cam.example.org"}).status_code == 200
    assert client.get("/login", headers={"Host": "cam.example.org.evil"}).status_code == 400


def test_a_write_from_another_origin_is_refused_and_changes_nothing(user, demo_controller):
    for origin in ("http://evil.example", "null", "http://localhost.evil.example", "http://localhost:9999"):
        response = user.put("/api/settings", json={"mirror": True}, headers={"Origin": origin})
        assert response.status_code == 403 and "Origin" in response.json["errors"], origin
    assert demo_controller.settings.current.mirror is False
    same = user.put("/api/settings", json={"mirror": True}, headers={"Origin": "http://localhost"})
    assert same.status_code == 200 and demo_controller.settings.current.mirror is True
    assert user.put("/api/settings", json={"mirror": False}).status_code == 200  # no Origin: curl


# ---- bad bodies: a 400 naming why, never a 500 ----

@pytest.mark.parametrize("body, reason", [
    (b'{"blur_strength": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested more than 32 levels deep"),
    (b'{"a": ' + b"{\"a\": " * 40 + b"1" + b"}" * 41, "nested more than 32 levels deep"),
    (b'{"blur_strength": ' + b"7" * 5001 + b"}", "a number with 5001 characters"),
    (b'{"blur_strength": 1e999}', "out of range"),
    (b'{"blur_strength": NaN}', "NaN is not a JSON number"),
])
def test_a_hostile_json_body_is_a_400_naming_the_body(user, demo_controller, body, reason):
    before = demo_controller.settings.current
    for method, path in (("put", "/api/settings"), ("post", "/api/login"), ("post", "/api/password")):
        response = getattr(user, method)(path, data=body, content_type="application/json")
        assert response.status_code == 400, (path, response.data[:200])
        assert reason in response.json["errors"]["body"]
    assert demo_controller.settings.current == before


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(client, user):
    big = b'{"password": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = client.post("/api/login", data=big, content_type="application/json")
    assert response.status_code == 413 and "64 KiB" in response.json["errors"]["body"]
    response = user.put("/api/settings", data=big, content_type="application/json")
    assert response.status_code == 413


# ---- password guessing ----

@pytest.fixture
def slow_hash_app(tmp_path, demo_daemon, clock):
    """The password checked by scrypt, as on a device (BLURCAM_ADMIN_PASSWORD is checked fast)."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[web]\nadmin_password_hash = "{generate_password_hash(PASSWORD)}"\n')
    return create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": demo_daemon.path,
                       "FLEET_FILE": fleet, "LOGIN_THROTTLE": LoginThrottle(clock=clock)})


def test_a_burst_of_parallel_guesses_gets_no_more_checks_than_the_limit(slow_hash_app):
    answers: list[int] = []

    def guess():
        client = slow_hash_app.test_client()
        answers.append(client.post("/api/login", json={"password": "guess"}).status_code)

    burst = [threading.Thread(target=guess) for _ in range(20)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join()
    assert sorted(answers) == [401] * 5 + [429] * 15


def test_wrong_current_passwords_in_a_password_change_are_limited_like_logins(slow_hash_app, clock):
    user = log_in(slow_hash_app.test_client())
    short = {"current_password": PASSWORD, "new_password": "short"}
    for _ in range(6):  # a refused new password is no guess at the current one
        assert user.post("/api/password", json=short).status_code == 400
    for _ in range(5):
        wrong = user.post("/api/password", json={"current_password": "guess", "new_password": "long-enough"})
        assert wrong.status_code == 400 and wrong.json["errors"] == {"current_password": "wrong password"}
    blocked = user.post("/api/password", json={"current_password": PASSWORD, "new_password": "long-enough"})
    assert blocked.status_code == 429 and "try again" in blocked.json["errors"]["current_password"]
    assert int(blocked.headers["Retry-After"]) > 0
    clock.now += 61
    changed = user.post("/api/password", json={"current_password": PASSWORD, "new_password": "long-enough"})
    assert changed.status_code == 200


def test_guessing_from_many_addresses_never_locks_out_the_owner_on_this_machine(make_app):
    app = make_app(LOGIN_THROTTLE=None)  # the throttle the app makes itself, trusting the local link
    client = app.test_client()
    for host in range(6):
        for _ in range(5):
            answer = client.post("/api/login", json={"password": "guess"},
                                 environ_base={"REMOTE_ADDR": f"192.0.2.{host + 1}"})
            assert answer.status_code == 401
    stranger = client.post("/api/login", json={"password": PASSWORD}, environ_base={"REMOTE_ADDR": "192.0.2.99"})
    assert stranger.status_code == 429  # the device-wide cap holds for the network ...
    owner = client.post("/api/login", json={"password": PASSWORD}, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert owner.status_code == 200  # ... but not for this machine (nor the USB link)


# ---- uploads: exactly the documented formats, sizes checked before decoding ----

def upload(user, data: bytes, name: str = "picture"):
    return user.post("/api/background", data={"image": (io.BytesIO(data), name)},
                     content_type="multipart/form-data")


@pytest.mark.parametrize("data, words", [
    (jpeg_claiming(65500, 65500), "the JPEG is 65500x65500 pixels"),
    (png_claiming(30000, 30000), "the PNG is 30000x30000 pixels"),
    (encoded(".tiff"), "a TIFF file"), (encoded(".ppm"), "a PNM"), (encoded(".pfm"), "a PFM file"),
    (encoded(".hdr"), "a Radiance HDR file"), (encoded(".ras"), "a Sun raster file"),
])
def test_a_bomb_or_an_undocumented_format_is_a_400_naming_the_problem(user, demo_controller, data, words):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    response = upload(user, data)
    assert response.status_code == 400, response.json
    reason = response.json["errors"]["background"]
    assert words in reason
    assert reason.endswith("are accepted")  # ... and says what is
    assert "cv2" not in reason and "opencv" not in reason.lower()
    assert time.monotonic() - started < 5
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 200  # the 30000x30000 PNG took 5.4 GB when it was decoded
    assert demo_controller.settings.current.background == ""
    assert not list((demo_controller.state_dir / "backgrounds").glob("*"))


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_the_documented_formats_are_accepted_and_applied(user, demo_controller, ext):
    response = upload(user, encoded(ext, 800, 600))
    assert response.status_code == 200
    name = response.json["background"]
    assert demo_controller.settings.current.background == name
    assert (demo_controller.state_dir / "backgrounds" / name).is_file()


@pytest.mark.parametrize("name", [".", "..", "web-secret.key", "settings.json", "background-000000000000.jpg",
                                  "../web-secret.key", ".hidden"])
def test_background_can_only_name_a_stored_background(user, demo_controller, name):
    response = user.put("/api/settings", json={"background": name})
    assert response.status_code == 400
    reason = response.json["errors"]["background"]  # says what is accepted, not a regular expression
    assert "an uploaded picture's name" in reason or "is not a stored background; upload" in reason, reason
    assert demo_controller.settings.current.background == ""


def test_background_can_name_the_stored_one_or_none(user, demo_controller):
    stored = upload(user, encoded(".png", 640, 360)).json["background"]
    assert user.put("/api/settings", json={"background": ""}).json["background"] == ""
    assert user.put("/api/settings", json={"background": stored}).json["background"] == stored


# ---- resolutions: bounded, each once; no write saved and reported failed ----

@pytest.mark.parametrize("resolutions, words", [
    (["640x360"] * 4000, "at most 4 items"),
    (["640x360", "1280x720", "640x360"], "lists 640x360 more than once"),
])
def test_resolutions_are_bounded_and_unique_and_a_refused_list_is_not_saved(user, demo_controller,
                                                                             resolutions, words):
    response = user.put("/api/settings", json={"resolutions": resolutions, "mirror": True})
    assert response.status_code == 400 and words in response.json["errors"]["resolutions"]
    assert len(response.data) < 2048  # the error does not echo the whole list back
    assert not demo_controller.settings.path.exists()
    assert user.get("/api/settings").status_code == 200


def test_the_largest_valid_settings_fit_in_one_control_socket_reply(user, demo_controller):
    # The longest text the card can draw (emoji are left out, so a non-ASCII letter is the longest).
    largest = {"resolutions": list(RESOLUTIONS), "privacy_text": "\u0416" * 60}
    settings = user.put("/api/settings", json=largest).json
    assert settings["privacy_text"] == largest["privacy_text"]
    biggest_reply = json.dumps({"ok": True, "result": {**settings, "background": "b" * 128}},
                               separators=(",", ":"))
    assert len(biggest_reply.encode()) < MAX_HEADER // 8


def test_no_write_endpoint_answers_a_hostile_body_with_a_server_error(app, user):
    """Every POST/PUT/DELETE the app has, the page helpers' too, with each hostile body."""
    bodies = [b"[" * 5000 + b"]" * 5000, b'{"a": ' + b"9" * 5001 + b"}", b'{"a": NaN}', b"\xff\xfe", b"{"]
    writes = [(m, re.sub(r"<[^>]*>", "x", rule.rule)) for rule in app.url_map.iter_rules()
              for m in sorted(rule.methods & {"POST", "PUT", "PATCH", "DELETE"})]
    assert ("PUT", "/api/settings") in writes and len(writes) >= 5
    for method, path in writes:
        if path in ("/api/logout", "/logout", "/login"):
            continue
        for body in bodies:
            response = user.open(path, method=method, data=body, content_type="application/json",
                                 headers={"X-CSRF-Token": user.token})
            assert response.status_code < 500, (method, path, body[:20], response.data[:300])
            assert b"CSRF" not in response.data  # the body itself was judged
