"""The machine's health as the status shows it: CPU load and use, SoC temperature, throttling."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.cpuload import CpuMeter

TEMPERATURE_PATH = "/sys/class/thermal/thermal_zone0/temp"  # millidegrees Celsius
THROTTLED_PATHS = ("/sys/devices/platform/soc/soc:firmware/get_throttled",
                   "/sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon/get_throttled")


def system_health() -> dict:
    """CPU load, SoC temperature and (on a Pi) the firmware's throttling flags."""
    out: dict = {"cpu_load": list(os.getloadavg()), "temperature_c": None, "throttled": None}
    try:
        out["temperature_c"] = int(Path(TEMPERATURE_PATH).read_text()) / 1000
    except (OSError, ValueError):
        pass
    for p in THROTTLED_PATHS:
        try:
            bits = int(Path(p).read_text(), 16)
        except (OSError, ValueError):
            continue
        out["throttled"] = {"under_voltage": bool(bits & 0x1), "freq_capped": bool(bits & 0x2),
                            "throttled": bool(bits & 0x4), "soft_temp_limit": bool(bits & 0x8),
                            "under_voltage_since_boot": bool(bits & 0x10000),
                            "throttled_since_boot": bool(bits & 0x40000)}
        break
    return out


class Health:
    """The health part of the daemon's status (CPU use is measured between two calls)."""

    def __init__(self) -> None:
        self._cpu = CpuMeter()

    def status(self) -> dict:
        out = system_health()
        out["cpu_percent"] = self._cpu.percent()  # all cores together, since the last status
        return out


def status_line(status: dict) -> str:
    """One short line for systemd's STATUS= from the daemon's status."""
    if status["state"] == "idle":
        return f"idle, waiting for a host ({'connected' if status['host_connected'] else 'no USB host'})"
    return (f"{status['state']} {status['stream_format'] or ''} at {status['fps']:.1f} fps, "
            f"inference {status['inference_ms'] or 0:.1f} ms")
