"""The settings page's update endpoint (web/update.py): a URL request left in the spool directory
for the root-run installer, status from it; login and CSRF like every write. What the installer
does with the request is tested with RAUC in tests/image_build/test_update_rauc.py."""

from __future__ import annotations

import json

import pytest

from tests.web.conftest import log_in


@pytest.fixture
def spool(tmp_path):
    return tmp_path / "spool"


@pytest.fixture
def app(make_app, spool):
    return make_app(UPDATE_SPOOL=str(spool))


def test_a_url_is_requested_and_a_bad_one_named(user, spool):
    r = user.post("/api/update", json={"url": "ftp://example.invalid/b.raucb"})
    assert r.status_code == 400 and "not an http(s) URL" in r.json["errors"]["url"]
    assert not (spool / "request.json").exists()
    r = user.post("/api/update", json={"url": "https://updates.example/blurcam.raucb"})
    assert r.status_code == 202
    assert json.loads((spool / "request.json").read_text()) == {"url": "https://updates.example/blurcam.raucb"}
    assert user.get("/api/update").json == {"state": "requested"}


def test_a_second_request_while_one_is_pending_is_refused(user, spool):
    assert user.post("/api/update", json={"url": "https://a.example/1.raucb"}).status_code == 202
    r = user.post("/api/update", json={"url": "https://a.example/2.raucb"})
    assert r.status_code == 409 and "already in progress" in r.json["error"]
    assert json.loads((spool / "request.json").read_text())["url"].endswith("1.raucb")


def test_the_installers_status_is_shown(user, spool):
    spool.mkdir()
    (spool / "status.json").write_text(json.dumps({"state": "failed", "error": "signature verification failed"}))
    assert user.get("/api/update").json["error"] == "signature verification failed"


def test_updates_need_a_login_and_the_csrf_token(client, spool):
    assert client.post("/api/update", json={"url": "https://a.example/1.raucb"}).status_code == 401
    assert client.get("/api/update").status_code == 401
    logged_in = log_in(client)
    r = logged_in.client.post("/api/update", json={"url": "https://a.example/1.raucb"})  # no token
    assert r.status_code == 403
    assert not (spool / "request.json").exists()
