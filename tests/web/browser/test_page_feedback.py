"""What the page tells its user, in Chromium against the real daemon: errors that stay readable,
notices instead of silent surprises, and nothing half-visible."""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest

from appliance import backgrounds
from tests.web.browser.helpers import api_put, corners, pick_view, shown_image, wait_for_frames, wait_saved, wait_until

pytestmark = pytest.mark.browser


def test_a_rejected_upload_says_why_next_to_the_field_and_the_message_stays(desktop, camera, tmp_path):
    page, base = desktop, camera[0]
    junk = tmp_path / "notes.png"
    junk.write_text("this is not a picture")
    page.locator("#background-file").set_input_files(str(junk))
    page.get_by_role("button", name="Upload and use").click()
    error = page.locator("#e-background")
    error.wait_for(state="visible")
    assert error.inner_text().startswith("Not uploaded: ")
    assert len(error.inner_text()) > len("Not uploaded: ") + 10  # the daemon's reason, not a bare "failed"
    time.sleep(3)  # longer than any toast: the reason is still there to read
    assert error.is_visible()
    assert page.request.get(base + "/api/settings").json()["background"] == ""


def test_replace_without_an_upload_shows_a_built_in_picture_and_says_which(desktop):
    page = desktop
    wait_until(page, "document.querySelectorAll('#background-choices .thumb').length > 0")
    page.locator('label[for="f-effect-replace"]').click()
    wait_saved(page)
    assert page.locator("#background-current").inner_text() == \
        f"In use now: {backgrounds.BUILTIN[backgrounds.DEFAULT]} (the default)."
    assert page.locator(f'.thumb[data-name="{backgrounds.DEFAULT}"]').get_attribute("aria-checked") == "true"
    wait_for_frames(page, 3)
    studio = cv2.imread(str(backgrounds.BUILTIN_DIR / f"{backgrounds.DEFAULT}.jpg"))
    shown = shown_image(page)
    studio = cv2.resize(studio, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_AREA)
    # Behind the person is the built-in picture, not a blurred room.
    assert np.abs(corners(shown).astype(int) - corners(studio)).mean() < 12


@pytest.mark.parametrize("effect", ["none", "privacy"])
def test_the_mask_view_says_there_is_no_mask_instead_of_showing_white(desktop, camera, effect):
    page, base = desktop, camera[0]
    api_put(page, base, "/api/settings", {"effect": effect})
    pick_view(page, "mask")
    wait_for_frames(page, 3)
    gray = shown_image(page).mean(axis=2)
    assert gray.mean() < 100, "a white tile, as if everything were the person"
    assert (gray > 180).mean() > 0.005, "no words on the tile"


def test_cpu_load_is_shown_as_a_percentage(desktop):
    page = desktop
    wait_until(page, "document.getElementById('st-cpu').textContent !== '–'")
    assert re.fullmatch(r"\d+ % busy", page.locator("#st-cpu").inner_text())


def test_a_hidden_toast_leaves_nothing_on_the_screen(desktop):
    page = desktop
    page.locator("#f-mirror").check()
    wait_saved(page)
    wait_until(page, "!document.getElementById('toast').classList.contains('show')")
    time.sleep(0.4)  # the slide-out
    seen = page.evaluate("""() => {
        const r = document.getElementById('toast').getBoundingClientRect();
        return {top: r.top, visibility: getComputedStyle(document.getElementById('toast')).visibility,
                height: innerHeight};
    }""")
    assert seen["visibility"] == "hidden" and seen["top"] >= seen["height"], seen


def test_log_out_stays_on_one_line_on_a_phone(phone):
    button = phone.get_by_role("button", name="Log out")
    lines = phone.evaluate("""(el) => {
        const range = document.createRange();
        range.selectNodeContents(el);
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
    }""", button.element_handle())
    assert lines == 1
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390


def test_privacy_text_keeps_accents_names_left_out_emoji_and_refuses_what_it_cannot_draw(desktop, camera):
    page, base = desktop, camera[0]
    field = page.locator("#f-privacy_text")
    field.fill("Café in Zürich 👋")
    field.press("Enter")
    wait_saved(page)
    notice = page.locator("#n-privacy_text")
    notice.wait_for(state="visible")
    assert "👋" in notice.inner_text()
    assert field.input_value() == "Café in Zürich"
    assert page.request.get(base + "/api/settings").json()["privacy_text"] == "Café in Zürich"

    field.fill("東京")
    field.press("Enter")
    error = page.locator("#e-privacy_text")
    error.wait_for(state="visible")
    assert "U+6771" in error.inner_text()
    assert page.locator("#toast").inner_text().startswith("Not saved")
    assert page.request.get(base + "/api/settings").json()["privacy_text"] == "Café in Zürich"
