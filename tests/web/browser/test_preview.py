"""The live preview in Chromium: one streamed picture, a view switcher, always in sight."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from tests.web.browser.helpers import (frame_number, frames, in_viewport, pick_view, shown_image, sharpness,
                                       wait_for_frames, wait_saved, wait_until)

pytestmark = pytest.mark.browser

SECONDS = 10.0


def test_the_preview_shows_nearly_every_frame_the_pipeline_makes(desktop):
    page = desktop
    wait_for_frames(page, 5)
    first_image = shown_image(page)
    shown0, last, t0 = frames(page), frame_number(page), time.monotonic()
    made = 0  # frames the pipeline made meanwhile, by their numbers (a restarted pipeline counts anew)
    while time.monotonic() - t0 < SECONDS:
        time.sleep(0.25)
        number = frame_number(page)
        made += number - last if number >= last else number
        last = number
    shown, elapsed = frames(page) - shown0, time.monotonic() - t0
    print(f"\npreview in Chromium: {shown / elapsed:.1f} fps drawn, pipeline {made / elapsed:.1f} fps "
          f"({shown} of {made} frames in {elapsed:.1f} s)")
    assert shown >= 2 * SECONDS, "frames stopped arriving"
    # Nearly every frame the pipeline makes is drawn (polling separate JPEGs drew 4-6 of the
    # pipeline's 15-24 a second). The bound is loose, as a machine loaded many times over starves
    # Chromium's decoder now and then; drawing every other frame still fails it.
    assert shown >= 0.6 * made, (shown, made)
    assert np.abs(shown_image(page).astype(int) - first_image).mean() > 1  # a moving picture
    # While frames arrive the status says so: not "Idle, 0.0 fps".
    assert page.locator("#st-state").inner_text() == "Preview only"
    # (The daemon reports 0 fps after a second without a frame, which a loaded machine has now
    # and then: the status shows the pipeline's rate within a few polls.)
    wait_until(page, "parseFloat(document.getElementById('st-fps').textContent) > 0")
    assert re.fullmatch(r"\d+ fps", page.locator("#preview-fps").inner_text())


def test_the_view_switcher_shows_each_view_and_all_three_side_by_side(desktop):
    page = desktop
    pick_view(page, "original")
    original = shown_image(page)
    pick_view(page, "output")
    output = shown_image(page)
    assert sharpness(output) < sharpness(original) / 3  # the room behind the person is blurred

    pick_view(page, "mask")
    mask = shown_image(page)
    gray = mask.mean(axis=2)
    assert ((gray < 40) | (gray > 215)).mean() > 0.85  # black and white: a mask, not a photo

    pick_view(page, "all")
    both = shown_image(page)
    assert both.shape[:2] == (270, 1440)
    box = page.locator("#preview").bounding_box()
    assert box["width"] / box["height"] == pytest.approx(1440 / 270, rel=0.05)  # not squashed
    assert page.locator("#screen").get_attribute("data-state") == "live"


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_the_preview_stays_in_sight_while_settings_change(size, request):
    page = request.getfixturevalue(size)
    wait_for_frames(page, 2)
    # The last setting on the page: far below the preview on both screens.
    page.locator("#f-jpeg_quality").scroll_into_view_if_needed()
    page.locator("#f-jpeg_quality").focus()
    page.keyboard.press("ArrowLeft")
    wait_saved(page)
    assert page.evaluate("window.scrollY") > 500, "the page did not scroll: nothing was tested"
    assert in_viewport(page, "#preview"), page.locator("#preview").bounding_box()
    assert in_viewport(page, "#f-jpeg_quality")
    wait_for_frames(page, 3)  # and it keeps moving


def test_pausing_live_says_so_and_stops_the_stream_until_it_is_resumed(desktop):
    page = desktop
    wait_for_frames(page, 2)
    page.locator('label[for="preview-on"]').click()
    wait_until(page, "document.getElementById('screen').dataset.state === 'paused'")
    assert page.locator("#preview-state").is_visible()
    assert "Paused" in page.locator("#preview-state").inner_text()
    assert page.locator("#preview-fps").inner_text() == "Paused"
    paused_at = frames(page)  # not one more, not even a frame that was decoding at the click
    time.sleep(2.0)
    assert frames(page) == paused_at, "frames kept coming while paused"

    page.locator('label[for="preview-on"]').click()
    wait_for_frames(page, 4)
    assert not page.locator("#preview-state").is_visible()
    wait_until(page, "/^\\d+ fps$/.test(document.getElementById('preview-fps').textContent)")
