"""Who gets in: the login, sessions, CSRF, the throttle, the password's origin and its change."""

from __future__ import annotations

import logging
import re

import pytest
from werkzeug.security import generate_password_hash

from tests.web.conftest import PASSWORD, log_in
from web import create_app
from web.auth import PASSWORD_FILE, LoginThrottle

PUBLIC = {"/login", "/api/login", "/static/<path:filename>"}


def every_protected_route(app):
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC:
            continue
        path = re.sub(r"<[^>]*>", "output", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, path


def test_nothing_but_the_login_page_and_its_assets_is_reachable_without_logging_in(app, client):
    routes = list(every_protected_route(app))
    assert ("PUT", "/api/settings") in routes and ("GET", "/") in routes  # the walk sees the app
    for method, path in routes:
        response = client.open(path, method=method)
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path)
            assert response.json["error"] == "not logged in"
        elif path == "/metrics":  # for monitoring: a bearer token or a login, never a page
            assert response.status_code == 401 and "Bearer" in response.headers["WWW-Authenticate"]
        else:
            assert response.status_code == 302, (method, path)
            assert response.headers["Location"].startswith("/login")
    assert client.get("/no/such/page").status_code == 302
    assert client.get("/login").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/app.js").status_code == 200


def test_a_wrong_password_is_refused_and_gives_no_session(client):
    response = client.post("/api/login", json={"password": "guess"})
    assert response.status_code == 401
    assert response.json["errors"] == {"password": "wrong password"}
    assert client.get("/api/settings").status_code == 401


@pytest.mark.parametrize("kwargs, field", [
    ({"json": {"pass": PASSWORD}}, "password"),
    ({"json": {"password": 12345678}}, "password"),
    ({"json": ["password"]}, "body"),
    ({"data": "{nope", "content_type": "application/json"}, "body"),
    ({"data": {"password": PASSWORD}}, "body"),  # a form post: a cross-site form cannot send JSON
])
def test_a_malformed_login_request_is_a_400_naming_what_is_wrong(client, kwargs, field):
    response = client.post("/api/login", **kwargs)
    assert response.status_code == 400
    assert field in response.json["errors"]


def test_login_returns_a_csrf_token_that_every_write_needs(client):
    user = log_in(client)
    assert client.get("/api/settings").status_code == 200  # reads need no token
    no_token = client.put("/api/settings", json={"blur_strength": 5})
    assert no_token.status_code == 403
    assert "X-CSRF-Token" in no_token.json["errors"]
    wrong = client.put("/api/settings", json={"blur_strength": 5}, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    assert client.get("/api/settings").json["blur_strength"] == 60
    assert user.put("/api/settings", json={"blur_strength": 5}).status_code == 200


def test_a_token_from_another_session_does_not_work(app):
    alice, mallory = app.test_client(), app.test_client()
    log_in(alice)
    mallory_token = log_in(mallory).token
    response = alice.put("/api/settings", json={"blur_strength": 5}, headers={"X-CSRF-Token": mallory_token})
    assert response.status_code == 403


def test_logout_ends_the_session_even_for_a_copied_cookie(app):
    client = app.test_client()
    user = log_in(client)
    cookie = client.get_cookie("blurcam_session").value
    assert user.post("/api/logout").status_code == 204
    assert client.get("/api/settings").status_code == 401
    replay = app.test_client()
    replay.set_cookie("blurcam_session", cookie)
    assert replay.get("/api/settings").status_code == 401


def test_logout_needs_the_csrf_token(client):
    log_in(client)
    assert client.post("/api/logout").status_code == 403
    assert client.get("/api/settings").status_code == 200


def test_session_cookie_is_httponly_and_samesite_strict_and_secure_only_over_https(make_app):
    app = make_app(ALLOWED_HOSTS=["cam.local"])  # the name of a TLS proxy in front of the page
    plain = app.test_client().post("/api/login", json={"password": PASSWORD})
    cookie = plain.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    tls = app.test_client().post("/api/login", json={"password": PASSWORD}, base_url="https://cam.local")
    assert "Secure" in tls.headers["Set-Cookie"]


def test_login_attempts_are_throttled_per_client_and_recover_after_the_window(client, clock):
    for _ in range(5):
        assert client.post("/api/login", json={"password": "guess"}).status_code == 401
    blocked = client.post("/api/login", json={"password": PASSWORD})
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 61
    other = client.post("/api/login", json={"password": PASSWORD}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200
    clock.now += 61
    assert client.post("/api/login", json={"password": PASSWORD}).status_code == 200


def test_the_throttle_also_caps_guesses_spread_over_many_addresses():
    now = [0.0]
    throttle = LoginThrottle(per_client=5, overall=30, window_s=60, clock=lambda: now[0])
    for i in range(30):
        assert throttle.begin(f"10.0.{i}.1") == 0
    assert throttle.begin("10.9.9.9") == pytest.approx(60.0)
    now[0] = 60.5
    assert throttle.begin("10.9.9.9") == 0


def test_the_html_login_form_needs_its_csrf_token_and_redirects_home(client):
    assert client.post("/login", data={"password": PASSWORD}).status_code == 403
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    wrong = client.post("/login", data={"password": "nope", "csrf_token": token})
    assert wrong.status_code == 401 and b"Wrong password" in wrong.data
    ok = client.post("/login", data={"password": PASSWORD, "csrf_token": token})
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    assert client.get("/").status_code == 200


def test_the_login_form_never_redirects_to_another_site(client):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token,
                                           "next": "//evil.example/steal"})
    assert response.headers["Location"] == "/"


def test_first_start_generates_a_password_logs_it_once_and_stores_only_a_slow_hash(tmp_path, daemon, caplog):
    config = {"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": daemon.path}
    with caplog.at_level(logging.WARNING, logger="web.auth"):
        app = create_app(config)
    lines = [r.getMessage() for r in caplog.records if "Generated one" in r.getMessage()]
    assert len(lines) == 1
    password = re.search(r"page: (\S+) ", lines[0]).group(1)
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", password)
    stored = (tmp_path / "web" / PASSWORD_FILE).read_text()
    assert stored.startswith("scrypt:") and password not in stored
    assert ((tmp_path / "web" / PASSWORD_FILE).stat().st_mode & 0o777) == 0o600
    log_in(app.test_client(), password)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="web.auth"):
        again = create_app(config)
    assert not [r for r in caplog.records if "Generated one" in r.getMessage()]
    log_in(again.test_client(), password)


def test_two_devices_never_share_a_generated_password(tmp_path, daemon, caplog):
    passwords = []
    for name in ("one", "two"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="web.auth"):
            create_app({"STATE_DIR": tmp_path / name, "CONTROL_SOCKET": daemon.path})
        passwords.append(re.search(r"page: (\S+) ", caplog.records[-1].getMessage()).group(1))
    assert passwords[0] != passwords[1]


def test_the_fleet_file_can_set_the_password_hash(tmp_path, daemon):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[web]\nadmin_password_hash = "{generate_password_hash("fleet-secret-1")}"\n')
    app = create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": daemon.path, "FLEET_FILE": fleet})
    assert app.test_client().post("/api/login", json={"password": "wrong-one"}).status_code == 401
    log_in(app.test_client(), "fleet-secret-1")
    assert not (tmp_path / "web" / PASSWORD_FILE).exists()


def test_a_fleet_password_that_is_not_a_hash_is_a_clear_error(tmp_path, daemon):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[web]\nadmin_password_hash = "hunter2"\n')
    with pytest.raises(ValueError, match=r"\[web\] admin_password_hash: is not a werkzeug password hash"):
        create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": daemon.path, "FLEET_FILE": fleet})


def test_changing_the_password_checks_the_current_one_and_the_new_ones_length(tmp_path, daemon, clock):
    app = create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": daemon.path,
                      "FLEET_FILE": None, "LOGIN_THROTTLE": LoginThrottle(clock=clock)})
    (tmp_path / "web" / PASSWORD_FILE).write_text(generate_password_hash("old-password") + "\n")
    app = create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": daemon.path})
    user = log_in(app.test_client(), "old-password")
    wrong = user.post("/api/password", json={"current_password": "nope", "new_password": "long-enough"})
    assert wrong.status_code == 400 and wrong.json["errors"] == {"current_password": "wrong password"}
    short = user.post("/api/password", json={"current_password": "old-password", "new_password": "short"})
    assert short.status_code == 400 and "8 to 256 characters" in short.json["errors"]["new_password"]
    log_in(app.test_client(), "old-password")  # still the old one


def test_a_changed_password_ends_other_sessions_keeps_this_one_and_survives_a_restart(tmp_path, daemon):
    config = {"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": daemon.path}
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / PASSWORD_FILE).write_text(generate_password_hash("old-password") + "\n")
    app = create_app(config)
    me, other = log_in(app.test_client(), "old-password"), log_in(app.test_client(), "old-password")
    response = me.post("/api/password", json={"current_password": "old-password",
                                              "new_password": "new-password"})
    assert response.status_code == 200
    assert other.get("/api/settings").status_code == 401
    me.token = response.json["csrf_token"]
    assert me.put("/api/settings", json={"mirror": True}).status_code == 200
    restarted = create_app(config)
    assert restarted.test_client().post("/api/login", json={"password": "old-password"}).status_code == 401
    log_in(restarted.test_client(), "new-password")


def test_a_password_from_the_environment_cannot_be_changed_on_the_page(user):
    response = user.post("/api/password", json={"current_password": PASSWORD, "new_password": "whatever-else"})
    assert response.status_code == 400
    assert "BLURCAM_ADMIN_PASSWORD" in response.json["errors"]["new_password"]


def test_a_damaged_password_file_is_set_aside_and_a_new_password_generated(tmp_path, daemon, caplog):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / PASSWORD_FILE).write_text("\x00garbage")
    with caplog.at_level(logging.WARNING, logger="web.auth"):
        app = create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": daemon.path})
    assert (tmp_path / "web" / (PASSWORD_FILE + ".broken")).read_text() == "\x00garbage"
    password = re.search(r"page: (\S+) ", caplog.records[-1].getMessage()).group(1)
    log_in(app.test_client(), password)
