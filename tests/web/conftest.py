"""Fixtures: the web app in front of the control-socket daemon fixture (tests/conftest.py)."""

from __future__ import annotations

import pytest

from web import create_app
from web.auth import LoginThrottle

PASSWORD = "correct horse battery"


class FakeClock:
    """Time that only moves when a test says so (the login throttle's window)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def web_daemon(daemon):
    """The control socket the app talks to; a test module may return demo_daemon here instead."""
    return daemon


@pytest.fixture
def make_app(tmp_path, web_daemon, clock):
    def make(**config):
        return create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": web_daemon.path,
                           "ADMIN_PASSWORD": PASSWORD, "LOGIN_THROTTLE": LoginThrottle(clock=clock),
                           **config})
    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


class LoggedIn:
    """A test client with a session, sending its CSRF token on every write."""

    def __init__(self, client, token: str):
        self.client, self.token = client, token

    def __getattr__(self, name):
        method = getattr(self.client, name)
        if name not in ("post", "put", "delete", "patch"):
            return method

        def with_token(*args, headers=None, **kwargs):
            return method(*args, headers={"X-CSRF-Token": self.token, **(headers or {})}, **kwargs)
        return with_token


def log_in(client, password: str = PASSWORD) -> LoggedIn:
    response = client.post("/api/login", json={"password": password})
    assert response.status_code == 200, response.json
    return LoggedIn(client, response.json["csrf_token"])


@pytest.fixture
def user(client) -> LoggedIn:
    return log_in(client)


@pytest.fixture
def demo_user(tmp_path, demo_daemon, clock) -> LoggedIn:
    """Logged in to a web app in front of the real daemon (demo camera)."""
    app = create_app({"STATE_DIR": tmp_path / "web-demo", "CONTROL_SOCKET": demo_daemon.path,
                      "ADMIN_PASSWORD": PASSWORD, "LOGIN_THROTTLE": LoginThrottle(clock=clock)})
    return log_in(app.test_client())
