"""GET /metrics: the daemon's status in Prometheus' text format, for the monitoring a fleet
already runs.

Read with a login session, or with `Authorization: Bearer TOKEN` where TOKEN is the fleet
file's `[web] metrics_token` (that token opens /metrics and nothing else). Every scrape asks the
daemon for its status once; a figure the status does not have (nothing streaming, no sensor) is
left out rather than reported as 0. When the daemon does not answer, `blurcam_up` is 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from appliance.control import ControlClient, ControlError

bp = Blueprint("metrics", __name__)
# The classic text format every Prometheus reads (our metric names need none of the newer escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# status field -> (metric name, help, unit scale). Gauges; names end in their base unit.
GAUGES = {
    "fps": ("blurcam_fps", "Frames per second leaving the pipeline (0 when idle or stalled).", 1),
    "inference_ms": ("blurcam_inference_seconds", "One run of the segmentation model, recent average.", 1e-3),
    "frame_ms": ("blurcam_frame_seconds", "Processing time of one frame, recent average.", 1e-3),
    "mask_age_frames": ("blurcam_mask_age_frames", "Frames between a mask's own frame and the frame it is applied to.", 1),
    "mask_age_ms": ("blurcam_mask_age_seconds", "Age of the applied mask.", 1e-3),
    "uptime_s": ("blurcam_uptime_seconds", "Time since the daemon started.", 1),
    "temperature_c": ("blurcam_temperature_celsius", "SoC temperature.", 1),
    "cpu_percent": ("blurcam_cpu_percent", "CPU use of all cores together, percent of one core.", 1),
    "segment_workers": ("blurcam_segment_workers", "Model interpreters running in parallel.", 1),
}
COUNTERS = {
    "frames_out": ("blurcam_frames_out", "Frames delivered since the pipeline started."),
    "frames_dropped": ("blurcam_frames_dropped", "Frames captured but never composited (CPU too slow)."),
}
LATENCY_QUANTILES = {"latency_p50_ms": "0.5", "latency_p95_ms": "0.95"}
USB_COUNTERS = ("disconnects", "streams", "frames_queued", "frames_skipped", "frames_too_big", "stalls",
                "requests")
STATES = ("idle", "preview", "streaming")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def status_metrics(status: dict[str, Any] | None) -> Iterator[Metric]:
    """The metric families for one status reply (None: the daemon did not answer)."""
    up = GaugeMetricFamily("blurcam_up", "1 when the camera service answers, else 0.")
    up.add_metric([], 0.0 if status is None else 1.0)
    yield up
    if status is None:
        return
    info = InfoMetricFamily("blurcam", "What runs: version, camera source, model, effect.")
    info.add_metric([], {k: str(status.get(k, "")) for k in ("version", "source", "model", "precision", "effect")})
    yield info
    state = GaugeMetricFamily("blurcam_state", "1 for the daemon's current state.", labels=["state"])
    for name in STATES:
        state.add_metric([name], 1.0 if status.get("state") == name else 0.0)
    yield state
    for key, (name, text, scale) in GAUGES.items():
        if (value := _number(status.get(key))) is not None:
            yield GaugeMetricFamily(name, text, value=round(value * scale, 6))
    for key, (name, text) in COUNTERS.items():
        if (value := _number(status.get(key))) is not None:
            yield CounterMetricFamily(name, text, value=value)
    latency = GaugeMetricFamily("blurcam_latency_seconds", "Capture to encoded output, recent frames.",
                                labels=["quantile"])
    for key, quantile in LATENCY_QUANTILES.items():
        if (value := _number(status.get(key))) is not None:
            latency.add_metric([quantile], value / 1000)
    if latency.samples:
        yield latency
    yield from _health(status)
    yield from _usb(status)


def _health(status: dict[str, Any]) -> Iterator[Metric]:
    loads = status.get("cpu_load")
    if isinstance(loads, list) and len(loads) == 3:
        load = GaugeMetricFamily("blurcam_load_average", "System load average.", labels=["minutes"])
        for minutes, value in zip(("1", "5", "15"), loads):
            load.add_metric([minutes], float(value))
        yield load
    throttled = status.get("throttled")
    if isinstance(throttled, dict):  # only on a Raspberry Pi (firmware flags)
        flags = GaugeMetricFamily("blurcam_throttled", "1 while the firmware reports this condition.",
                                  labels=["condition"])
        for condition, on in sorted(throttled.items()):
            flags.add_metric([condition], 1.0 if on else 0.0)
        yield flags


def _usb(status: dict[str, Any]) -> Iterator[Metric]:
    usb = status.get("usb")
    if not isinstance(usb, dict):
        usb = {}
    host = GaugeMetricFamily("blurcam_usb_host_connected", "1 while a computer is connected over USB.")
    host.add_metric([], 1.0 if usb.get("connected", status.get("host_connected")) else 0.0)
    yield host
    streaming = GaugeMetricFamily("blurcam_usb_streaming", "1 while the computer takes video.")
    streaming.add_metric([], 1.0 if usb.get("streaming", status.get("state") == "streaming") else 0.0)
    yield streaming
    for key in USB_COUNTERS:
        if (value := _number(usb.get(key))) is not None:
            yield CounterMetricFamily(f"blurcam_usb_{key}", f"USB webcam: {key.replace('_', ' ')}.", value=value)


class _StatusCollector:
    def __init__(self, client: ControlClient):
        self.client = client

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.client.status()
        except ControlError:
            status = None
        yield from status_metrics(status)


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(current_app.extensions["blurcam.control"]))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE)
