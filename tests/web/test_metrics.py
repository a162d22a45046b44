"""GET /metrics against the real daemon on the demo camera: Prometheus text, behind the login
or the fleet file's read-only token."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from web import create_app

from .conftest import PASSWORD, log_in

TOKEN = "m" * 20 + "-0123456789_abcdef"  # 38 characters


@pytest.fixture
def web_daemon(demo_daemon):
    return demo_daemon


@pytest.fixture
def app(make_app, tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[web]\nmetrics_token = "{TOKEN}"\n')
    return make_app(FLEET_FILE=fleet)


def scrape(client, **headers) -> dict[str, list]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(response.get_data(as_text=True))}


def value(metrics: dict[str, list], name: str, **labels) -> float:
    family = name.removesuffix("_total")
    samples = [s for s in metrics[family] if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(samples) == 1, (name, labels, metrics.get(family))
    return samples[0].value


def test_without_a_login_or_the_token_metrics_are_refused(client):
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token-wrong-token"},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"blurcam_" not in response.data


def test_the_token_opens_metrics_and_nothing_else(client):
    assert scrape(client, Authorization=f"Bearer {TOKEN}")
    for path in ("/api/settings", "/api/status", "/"):
        assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code in (302, 401), path
    assert client.put("/api/settings", json={"mirror": True},
                      headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401


def test_without_a_token_in_the_fleet_file_a_login_still_reads_metrics(make_app):
    client = make_app().test_client()
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    log_in(client, PASSWORD)
    assert value(scrape(client), "blurcam_up") == 1


def test_an_idle_daemon_reports_what_it_is_and_leaves_out_what_it_does_not_measure(user, demo_controller):
    metrics = scrape(user)
    assert value(metrics, "blurcam_up") == 1
    info = metrics["blurcam_info"][0].labels
    status = demo_controller.status()
    assert info["version"] == status["version"] and info["source"] == "demo" and info["effect"] == "blur"
    assert value(metrics, "blurcam_state", state="idle") == 1
    assert value(metrics, "blurcam_state", state="streaming") == 0
    assert value(metrics, "blurcam_fps") == 0
    assert value(metrics, "blurcam_uptime_seconds") >= 0
    assert value(metrics, "blurcam_usb_host_connected") == 0
    assert "blurcam_inference_seconds" not in metrics and "blurcam_latency_seconds" not in metrics
    assert value(metrics, "blurcam_load_average", minutes="1") >= 0


def test_a_running_pipeline_shows_its_rate_inference_latency_and_mask_age(user):
    deadline = time.monotonic() + 30
    while True:  # the preview keeps the real pipeline running on the demo camera
        assert user.get("/api/preview/output.jpg").status_code == 200
        metrics = scrape(user)
        if value(metrics, "blurcam_fps") > 0 and "blurcam_latency_seconds" in metrics:
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(0.3)
    assert value(metrics, "blurcam_state", state="preview") == 1
    assert 0 < value(metrics, "blurcam_inference_seconds") < 5
    p50 = value(metrics, "blurcam_latency_seconds", quantile="0.5")
    assert 0 < p50 <= value(metrics, "blurcam_latency_seconds", quantile="0.95") < 10
    assert value(metrics, "blurcam_mask_age_frames") >= 0 and value(metrics, "blurcam_mask_age_seconds") >= 0
    assert value(metrics, "blurcam_frames_out_total") > 0


def test_usb_temperature_and_throttling_appear_as_the_status_has_them(user, demo_controller, tmp_path,
                                                                      monkeypatch):
    # A Pi's thermal zone and firmware flags, as its kernel shows them: the daemon reads them itself.
    (tmp_path / "temp").write_text("61500\n")
    (tmp_path / "get_throttled").write_text("50001\n")  # under-voltage now and since boot; throttled once
    monkeypatch.setattr("appliance.health.TEMPERATURE_PATH", str(tmp_path / "temp"))
    monkeypatch.setattr("appliance.health.THROTTLED_PATHS", (str(tmp_path / "get_throttled"),))
    # The UVC server's figures join the status on a Pi (the gadget cannot run in-process here;
    # the VM tests run it).
    on_a_pi = {"usb": {"connected": True, "streaming": True, "disconnects": 3, "frames_queued": 1200,
                       "stalls": 0, "node": "/dev/video0"}}
    real_status = demo_controller.status
    demo_controller.status = lambda: {**real_status(), **on_a_pi}
    metrics = scrape(user)
    assert value(metrics, "blurcam_usb_host_connected") == 1 and value(metrics, "blurcam_usb_streaming") == 1
    assert value(metrics, "blurcam_usb_disconnects_total") == 3
    assert value(metrics, "blurcam_usb_frames_queued_total") == 1200
    assert value(metrics, "blurcam_temperature_celsius") == 61.5
    assert value(metrics, "blurcam_throttled", condition="under_voltage") == 1
    assert value(metrics, "blurcam_throttled", condition="throttled") == 0
    assert value(metrics, "blurcam_throttled", condition="throttled_since_boot") == 1
    assert value(metrics, "blurcam_throttled", condition="freq_capped") == 0


def test_a_stopped_daemon_is_up_0_not_an_error(user, demo_daemon):
    demo_daemon.stop()
    metrics = scrape(user)
    assert value(metrics, "blurcam_up") == 0 and set(metrics) == {"blurcam_up"}


def test_a_bad_metrics_token_in_the_fleet_file_is_a_clear_error(tmp_path, demo_daemon):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[web]\nmetrics_token = "short"\n')
    with pytest.raises(ValueError, match=r"\[web\] metrics_token: must be 32 to 256 letters"):
        create_app({"STATE_DIR": tmp_path / "web", "CONTROL_SOCKET": demo_daemon.path,
                    "ADMIN_PASSWORD": PASSWORD, "FLEET_FILE": fleet})
