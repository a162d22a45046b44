"""`blurcam status`: the running daemon's status, as a table and as JSON; and the command line's checks."""

from __future__ import annotations

import json
import re

import pytest

from appliance.cli import build_parser, format_status, main


def test_status_prints_the_daemons_own_status_as_json(demo_daemon, demo_controller, capsys):
    assert main(["status", "--json", "--control-socket", str(demo_daemon.path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    live = demo_controller.status()
    assert shown["state"] == live["state"] == "idle"
    assert shown["version"] == live["version"] and shown["source"] == "demo"
    assert set(shown) == set(live)


def test_status_as_a_table_has_one_aligned_row_per_value(demo_daemon, capsys):
    demo_daemon.controller.update_settings({"brightness": 12})
    assert main(["status", "--control-socket", str(demo_daemon.path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    table = {row.split()[0]: row.split(None, 1)[1] for row in rows}
    assert table["state"] == "idle" and table["source"] == "demo"
    assert table["controls.brightness"] == "12"
    assert table["fps"] == "0.0" and table["inference_ms"] == "-"
    assert len({len(re.match(r"\S+\s+", row).group()) for row in rows}) == 1  # values in one column


def test_status_of_a_daemon_that_is_not_running_is_one_line_and_exit_1(short_dir, capsys):
    assert main(["status", "--state-dir", str(short_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "camera service not running" in err[0] and str(short_dir) in err[0]


def test_the_table_flattens_nested_values_and_lists():
    text = format_status({"usb": {"state": "streaming", "format": None}, "cpu_load": [0.5, 0.25]})
    assert text.splitlines() == ["usb.state   streaming", "usb.format  -", "cpu_load    0.5, 0.25"]


@pytest.mark.parametrize("command", [["bench"], ["selftest", "--live"]])
@pytest.mark.parametrize("size", ["640", "640xabc", "0x360", "x"])
def test_a_size_that_is_not_width_x_height_is_refused_naming_it(command, size, capsys):
    # It used to reach the benchmark or self-test and end in a traceback (int('abc'), or two
    # values unpacked from one).
    with pytest.raises(SystemExit) as exit:
        main([*command, "--size", size])
    assert exit.value.code == 2
    assert f"argument --size: {size!r} is not WIDTHxHEIGHT in pixels" in capsys.readouterr().err


def test_a_width_x_height_size_is_passed_on_as_two_numbers():
    assert build_parser().parse_args(["bench", "--size", "320x240", "--size", "1280x720"]).size == [
        (320, 240), (1280, 720)]
    assert build_parser().parse_args(["selftest", "--size", "640x360"]).size == (640, 360)
