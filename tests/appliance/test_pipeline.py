"""The threaded pipeline: newest frame wins, output never waits for a slow mask, never unmasked."""

from __future__ import annotations

import time

import numpy as np
import simplejpeg

from appliance.frame import split_i420
from appliance.pipeline import FramePipeline, ThreadedPipeline
from appliance.settings import Settings
from appliance.sources.demo import DemoSource
from appliance.stream import FrameSlot, StreamFormat


class SlowModel(FramePipeline):
    """The real pipeline with a model that takes `delay` seconds more (an overloaded Pi Zero),
    counting its runs."""

    def __init__(self, settings, delay: float = 0.15):
        super().__init__(settings)
        self.masks = 0
        self.delay = delay

    def segment(self, frame, timings=None):
        time.sleep(self.delay)
        self.masks += 1
        return super().segment(frame, timings)


def run_for(seconds: float, pipeline: FramePipeline, fmt: StreamFormat):
    slot = FrameSlot()
    runner = ThreadedPipeline(DemoSource(), fmt, pipeline, slot)
    outputs = []
    runner.start()
    try:
        seq, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = slot.get(seq, timeout=1.0)
            if got:
                seq, data = got
                outputs.append(data)
    finally:
        runner.stop()
    return runner, outputs


def test_frames_keep_flowing_while_the_model_is_slow_reusing_the_last_mask():
    pipeline = SlowModel(Settings(), delay=0.5)  # at most 2 masks a second
    runner, outputs = run_for(3.0, pipeline, StreamFormat("mjpeg", 640, 360, 30))
    assert runner.error is None
    assert pipeline.masks >= 2
    # The 30 fps source outruns the model many times over; even on a loaded machine the output
    # shows several frames per mask instead of waiting for each one.
    assert runner.frames_out >= 2 * pipeline.masks


def test_every_frame_that_leaves_is_masked_even_the_first():
    pipeline = SlowModel(Settings(blur_strength=100))
    runner, outputs = run_for(1.0, pipeline, StreamFormat("mjpeg", 640, 360, 30))
    assert outputs, "no frames"
    first = simplejpeg.decode_jpeg(outputs[0], colorspace="GRAY")
    # The demo's bookshelf is sharp in the upper-left corner; in a masked frame it is blurred.
    corner = first[:120, :120].astype(np.float32)
    assert np.abs(np.diff(corner, axis=1)).mean() < 4.0


def test_yuyv_output_has_exactly_the_committed_size():
    runner, outputs = run_for(0.6, FramePipeline(Settings()), StreamFormat("yuyv", 640, 480, 30))
    assert outputs and all(len(o) == 640 * 480 * 2 for o in outputs)


def test_a_settings_change_applies_to_the_running_pipeline():
    pipeline = FramePipeline(Settings())
    slot = FrameSlot()
    runner = ThreadedPipeline(DemoSource(), StreamFormat("mjpeg", 640, 360, 30), pipeline, slot)
    runner.start()
    try:
        time.sleep(0.5)
        pipeline.configure(Settings(effect="privacy", privacy_text="Back soon"))
        time.sleep(0.5)
        seq, data = slot.get(0, timeout=1.0)
        card = simplejpeg.decode_jpeg(data, colorspace="GRAY")
        # The privacy card is a calm, almost uniform image: no camera content in it.
        assert card[:100].std() < 3
    finally:
        runner.stop()
