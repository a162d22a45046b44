"""What users of store-bought webcam apps expect, in Chromium against the real daemon: presets,
reset, settings as a file, a background picker, a clear "streaming to a computer" light; and the
screenshots of the page for the README."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.settings import Settings
from tests.web.browser.conftest import Service, free_port, wait_for_http
from tests.web.browser.helpers import (api_put, corners, log_in, pick_view, shown_image, wait_for_frames,
                                       wait_saved, wait_until)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[3]
# The README's pictures are refreshed on request only (BLURCAM_UPDATE_SCREENSHOT=1), so that a test
# run on a machine with odd fonts does not rewrite committed files; otherwise they go to the cache.
SCREENSHOT_DIR = ROOT / "docs" if os.environ.get("BLURCAM_UPDATE_SCREENSHOT") == "1" else ROOT / "tests" / ".cache"
SCREENSHOT_LIMIT = 300 * 1024


def settings_of(page, base: str) -> dict:
    return page.request.get(base + "/api/settings").json()


def test_a_named_preset_is_saved_and_brings_its_settings_back(desktop, camera):
    page, base = desktop, camera[0]
    api_put(page, base, "/api/settings", {"effect": "privacy", "privacy_text": "In a meeting", "mirror": True})
    page.reload()
    page.locator("#preset-name").fill("Meetings")
    page.get_by_role("button", name="Save current").click()
    wait_saved(page, "Preset “Meetings” saved")
    assert page.locator("#preset-list").input_value() == "Meetings"

    api_put(page, base, "/api/settings", {"effect": "blur", "privacy_text": "x", "mirror": False})
    page.reload()
    wait_until(page, "document.getElementById('preset-list').value === 'Meetings'")
    page.get_by_role("button", name="Apply").click()
    wait_saved(page, "Preset “Meetings” applied")
    assert page.locator("#f-effect-privacy").is_checked()  # the controls show it, not only the API
    assert page.locator("#f-privacy_text").input_value() == "In a meeting"
    now = settings_of(page, base)
    assert (now["effect"], now["privacy_text"], now["mirror"]) == ("privacy", "In a meeting", True)

    page.get_by_role("button", name="Delete").click()  # the confirmation is accepted (conftest)
    wait_saved(page, "Preset “Meetings” deleted")
    assert page.request.get(base + "/api/presets").json()["presets"] == []


def test_reset_brings_every_setting_and_control_back_to_its_default(desktop, camera):
    page, base = desktop, camera[0]
    api_put(page, base, "/api/settings", {"blur_strength": 7, "effect": "none", "brightness": 40})
    page.reload()
    wait_until(page, "document.getElementById('f-blur_strength').value === '7'")
    page.get_by_role("button", name="Reset all settings to defaults").click()
    wait_saved(page, "All settings are back to their defaults")
    assert settings_of(page, base) == Settings().model_dump()
    assert page.locator("#f-blur_strength").input_value() == "60"
    assert page.locator("#f-effect-blur").is_checked()


def test_settings_exported_to_a_file_come_back_on_import_and_a_bad_file_changes_nothing(desktop, camera, tmp_path):
    page, base = desktop, camera[0]
    api_put(page, base, "/api/settings", {"blur_strength": 33, "effect": "replace", "background": "ocean"})
    with page.expect_download() as download:
        page.get_by_role("link", name="Export settings").click()
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    assert exported.name.startswith("blurcam-settings-") and exported.suffix == ".json"
    assert json.loads(exported.read_text())["settings"]["blur_strength"] == 33

    api_put(page, base, "/api/settings", {"blur_strength": 90, "effect": "blur"})
    page.locator("#settings-import").set_input_files(str(exported))
    wait_saved(page, "Settings imported")
    now = settings_of(page, base)
    assert (now["blur_strength"], now["effect"], now["background"]) == (33, "replace", "ocean")
    assert page.locator("#f-blur_strength").input_value() == "33"

    bad = tmp_path / "edited.json"
    data = json.loads(exported.read_text())
    data["settings"].update(blur_strength=500, colour="red")
    bad.write_text(json.dumps(data))
    page.locator("#settings-import").set_input_files(str(bad))
    error = page.locator("#e-import")
    error.wait_for(state="visible")
    assert "nothing changed" in error.inner_text()
    assert "blur_strength" in error.inner_text() and "colour" in error.inner_text()
    assert settings_of(page, base)["blur_strength"] == 33


def test_a_built_in_background_is_picked_from_its_thumbnail(desktop, camera):
    page, base = desktop, camera[0]
    wait_until(page, "document.querySelectorAll('#background-choices .thumb').length >= 6")
    # Every thumbnail loads (a broken one would stay at naturalWidth 0).
    wait_until(page, "[...document.querySelectorAll('#background-choices img')]"
                     ".every((i) => i.complete && i.naturalWidth > 0)")
    page.locator('.thumb[data-name="dusk"]').click()
    wait_saved(page, "Background: Dusk")
    now = settings_of(page, base)
    assert (now["effect"], now["background"]) == ("replace", "dusk")
    assert page.locator('.thumb[data-name="dusk"]').get_attribute("aria-checked") == "true"
    assert page.locator("#background-current").inner_text() == "In use now: Dusk."
    pick_view(page, "output")
    wait_for_frames(page, 3)
    dusk = cv2.imread(str(Path(__file__).resolve().parents[3] / "appliance" / "background_images" / "dusk.jpg"))
    shown = shown_image(page)
    dusk = cv2.resize(dusk, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(corners(shown).astype(int) - corners(dusk)).mean() < 12


def test_the_page_shows_clearly_when_a_computer_takes_the_picture(browser_context, workdir):
    """The real Controller, driven the way the UVC server drives it when a host plugs in, commits
    a stream and unplugs (no USB device controller here to do it for real)."""
    from appliance.control import ControlServer
    from appliance.daemon import Controller
    from appliance.stream import StreamFormat

    state = workdir / "usb"
    controller = Controller(state / "daemon", source_spec="demo")
    server = ControlServer(controller, state / "daemon" / "control.sock")
    server.start()
    port = free_port()
    web = Service(["web", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state / "web"),
                   "--control-socket", str(server.path)], state / "web")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/login", web.process, web.log)
        page = browser_context.new_page()
        log_in(page, base)
        pill = page.locator("#usb-state")

        def shows(state: str, text: str) -> None:
            wait_until(page, f"document.getElementById('usb-state').dataset.state === '{state}'")
            assert pill.inner_text().strip() == text

        shows("none", "No computer connected")
        controller.set_host_state(True, None)
        shows("connected", "Computer connected, not streaming")
        fmt = StreamFormat("mjpeg", 1280, 720, 30)
        controller.start_stream(fmt)
        controller.set_host_state(True, fmt)
        shows("streaming", "Streaming to computer · MJPEG 1280x720@30")
        colour = page.evaluate("getComputedStyle(document.getElementById('usb-state')).backgroundColor")
        assert colour == "rgb(198, 40, 40)"  # the red "on air" light
        assert page.locator("#st-state").inner_text() == "Streaming to computer"
        wait_for_frames(page, 2)  # the preview shows the stream the computer gets
        controller.stop_stream()
        controller.set_host_state(False, None)
        shows("none", "No computer connected")
    finally:
        web.stop()
        server.stop()
        controller.close()


def save_screenshot(page, name: str) -> Path:
    png = page.screenshot()
    if len(png) > SCREENSHOT_LIMIT:  # the photo in the preview compresses poorly: shrink a little
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        image = cv2.resize(image, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
        png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    assert len(png) < SCREENSHOT_LIMIT, len(png)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / name
    path.write_bytes(png)
    return path


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_screenshots_of_the_page(size, request):
    page = request.getfixturevalue(size)
    wait_until(page, "document.querySelectorAll('#background-choices img').length >= 6")
    wait_for_frames(page, 3)
    wait_until(page, "/^\\d+ fps$/.test(document.getElementById('preview-fps').textContent)")
    wait_until(page, "!document.getElementById('toast').classList.contains('show')")
    page.wait_for_timeout(300)  # the toast's slide-out
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    save_screenshot(page, f"settings-{size}.png")


def test_the_cameras_own_controls_say_when_this_camera_has_none_of_them(desktop, camera):
    """The demo camera has no exposure, white balance, anti-flicker or focus of its own: the page
    shows those controls greyed out and says why, instead of sliders that change nothing."""
    from appliance import controls
    page, base = desktop, camera[0]
    wait_until(page, "document.getElementById('camera-note').textContent.includes('(demo)')")
    assert "none of these" in page.locator("#camera-note").inner_text()
    for row in controls.CONTROLS:
        field = page.locator(f'[data-field="{row.name}"]')
        unavailable = "unavailable" in (field.get_attribute("class") or "")
        assert unavailable == (not (row.software or row.crop)), row.name
        assert field.locator("input").first.is_disabled() == (not (row.software or row.crop)), row.name
    # A setting that only acts in one mode steps back in the other: as the mode changes, and as
    # the page is first drawn.
    def stepped_back(name: str) -> bool:
        return "inactive" in page.locator(f'[data-field="{name}"]').get_attribute("class")
    assert stepped_back("exposure_time") and not stepped_back("exposure_compensation")
    api_put(page, base, "/api/settings", {"exposure_mode": 1})
    page.reload()
    assert not stepped_back("exposure_time") and stepped_back("exposure_compensation")
    page.get_by_role("button", name="Reset all settings to defaults").click()  # auto exposure again
    wait_saved(page, "All settings are back to their defaults")
    assert stepped_back("exposure_time") and not stepped_back("exposure_compensation")
