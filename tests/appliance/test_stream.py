"""The latest-wins frame slot between the pipeline and its readers (the UVC feeder, the preview)."""

from __future__ import annotations

import threading

from appliance.stream import FrameSlot, StreamFormat


def test_a_reader_gets_the_newest_frame_with_its_sequence_number_and_skips_older_ones():
    slot = FrameSlot()
    slot.put(b"one")
    slot.put(b"two")
    assert slot.get(0, timeout=0) == (2, b"two")
    assert slot.get(2, timeout=0) is None  # nothing newer than what it has
    assert slot.latest() == (2, b"two")


def test_a_waiting_reader_wakes_for_the_next_frame():
    slot = FrameSlot()
    threading.Timer(0.05, slot.put, (b"frame",)).start()
    assert slot.get(0, timeout=10) == (1, b"frame")


def test_closing_wakes_a_waiting_reader_with_nothing():
    slot = FrameSlot()
    slot.put(b"old")
    threading.Timer(0.05, slot.close).start()
    assert slot.get(1, timeout=10) is None


def test_a_closed_slot_still_hands_out_a_frame_the_reader_has_not_had_but_never_an_empty_one():
    slot = FrameSlot()
    slot.close()
    assert slot.get(-1, timeout=0) is None  # never filled: no (0, None) for a reader to trip on
    slot.put(b"last")
    assert slot.get(0, timeout=0) == (1, b"last")


def test_a_stream_format_reads_as_encoding_size_and_rate():
    assert str(StreamFormat("mjpeg", 1280, 720, 30.0)) == "MJPEG 1280x720@30"
