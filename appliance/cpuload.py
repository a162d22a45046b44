"""How busy the CPUs are, in percent of all of them (from /proc/stat), for the status page."""

from __future__ import annotations

import threading
import time
from pathlib import Path

MIN_INTERVAL_S = 0.5  # readings closer together than this repeat the last figure


def _read(path: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over all CPUs; None where there is no /proc/stat."""
    try:
        fields = path.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user time
    return total - idle, total


class CpuMeter:
    """Percent busy since the previous reading (since creation for the first one)."""

    def __init__(self, path: str | Path = "/proc/stat"):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._last = _read(self.path)
        self._last_at = time.monotonic()
        self._percent: float | None = None

    def percent(self) -> float | None:
        with self._lock:
            if self._percent is not None and time.monotonic() - self._last_at < MIN_INTERVAL_S:
                return self._percent
            now = _read(self.path)
            if now is None or self._last is None:
                return None
            busy, total = now[0] - self._last[0], now[1] - self._last[1]
            if total > 0:
                self._percent = round(100.0 * busy / total, 1)
                self._last, self._last_at = now, time.monotonic()
            return self._percent
