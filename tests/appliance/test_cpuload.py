"""CPU load as a percentage of all cores, from /proc/stat."""

from __future__ import annotations

import time

from appliance import cpuload
from appliance.cpuload import CpuMeter


def write_stat(path, user, idle):
    path.write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")


def test_the_share_of_busy_time_since_the_last_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(cpuload, "MIN_INTERVAL_S", 0.0)
    stat = tmp_path / "stat"
    write_stat(stat, user=100, idle=100)
    meter = CpuMeter(stat)
    write_stat(stat, user=175, idle=125)  # 75 of 100 jiffies busy
    assert meter.percent() == 75.0
    write_stat(stat, user=185, idle=215)  # 10 of 100
    assert meter.percent() == 10.0


def test_readings_close_together_repeat_the_last_figure(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, user=0, idle=100)
    meter = CpuMeter(stat)
    write_stat(stat, user=50, idle=150)
    assert meter.percent() == 50.0
    write_stat(stat, user=50, idle=250)
    assert meter.percent() == 50.0  # within MIN_INTERVAL_S: no new interval yet


def test_this_machine_reports_a_percentage():
    meter = CpuMeter()
    time.sleep(0.2)
    value = meter.percent()
    assert value is not None and 0.0 <= value <= 100.0


def test_without_proc_stat_there_is_no_figure(tmp_path):
    assert CpuMeter(tmp_path / "missing").percent() is None
