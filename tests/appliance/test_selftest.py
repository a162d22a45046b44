"""`blurcam selftest`: the pipeline checked against the demo's ground truth, still and live."""

from __future__ import annotations

from appliance.selftest import run_live_selftest, run_selftest


def test_the_still_selftest_passes_on_every_demo_person():
    ok, lines = run_selftest()
    assert ok, lines
    assert len(lines) == 3


def test_the_live_selftest_compares_each_frame_that_left_with_its_truth():
    ok, lines = run_live_selftest(size=(320, 180), seconds_per_scene=0.5)
    assert ok, lines
    text = "\n".join(lines)
    assert "mask age 0 frames" in text and "p10" in text and "offline, same frames" in text
