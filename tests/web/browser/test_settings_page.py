"""The settings page in headless Chromium, against the real daemon running the demo camera."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.web.browser.conftest import PASSWORD, Service, free_port, wait_for_http

pytestmark = pytest.mark.browser

# The README's picture is refreshed on request only (BLURCAM_UPDATE_SCREENSHOT=1), so that a test
# run on a machine with odd fonts does not rewrite a committed file; otherwise it goes to the cache.
ROOT = Path(__file__).resolve().parents[3]
SCREENSHOT = (ROOT / "docs" / "screenshot.png" if os.environ.get("BLURCAM_UPDATE_SCREENSHOT") == "1"
              else ROOT / "tests" / ".cache" / "screenshot.png")
SCREENSHOT_LIMIT = 300 * 1024
UPLOAD_COLOUR_BGR = (200, 40, 160)  # a violet no demo room contains


def wait_until(page, expression: str, timeout: float = 15.0) -> None:
    """Poll a JS expression from outside the page: Playwright's own wait_for_function evaluates
    strings inside the page, which our Content-Security-Policy (rightly) forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:g} s: {expression}")
        time.sleep(0.05)


def log_in(page, base: str) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login")
    page.get_by_label("Admin password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/")


def frames_shown(page, view: str) -> int:
    return int(page.locator(f'img[data-view="{view}"]').get_attribute("data-frames") or 0)


def wait_for_new_frames(page, view: str, count: int = 2) -> None:
    """Previews already in flight may predate a change; wait until `count` newer ones arrive."""
    start = frames_shown(page, view)
    wait_until(page, 
        f"Number(document.querySelector('img[data-view=\"{view}\"]').dataset.frames || 0) >= {start + count}")


def shown_image(page, view: str) -> np.ndarray:
    """The pixels of the preview image the page is showing now."""
    data_url = page.evaluate("""(view) => {
        const img = document.querySelector(`img[data-view="${view}"]`);
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        canvas.getContext("2d").drawImage(img, 0, 0);
        return canvas.toDataURL("image/png");
    }""", view)
    png = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def corners(image: np.ndarray) -> np.ndarray:
    """The top corners: background in every demo scene (the person stands in the middle)."""
    h, w = image.shape[:2]
    return np.hstack([image[: h // 4, : w // 5], image[: h // 4, -w // 5:]])


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(corners(image), cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def blur_left(page) -> float:
    """Background detail left in the output, relative to the original: 1.0 means no blur.
    (Relative, because the demo camera moves on to another room every few seconds.)"""
    wait_for_new_frames(page, "original", 1)
    return sharpness(shown_image(page, "output")) / sharpness(shown_image(page, "original"))


def blur_left_once(page, condition, wanted: str, timeout: float = 10.0) -> float:
    """The first blur_left value meeting `condition` in the next frames (a busy machine may
    still deliver a frame or two made before the change)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wait_for_new_frames(page, "output", 1)
        seen.append(blur_left(page))
        if condition(seen[-1]):
            return seen[-1]
    raise AssertionError(f"preview never showed {wanted}; saw {[round(v, 4) for v in seen]}")


def set_slider(page, name: str, key: str) -> None:
    """Operate a slider from the keyboard, as a user without a mouse would."""
    page.locator(f"#f-{name}").focus()
    page.keyboard.press(key)
    wait_until(page, f"document.getElementById('toast').textContent === 'Saved'")


def save_screenshot(page) -> None:
    png = page.screenshot()
    if len(png) > SCREENSHOT_LIMIT:  # photos in the previews compress poorly: shrink a little
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        image = cv2.resize(image, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
        png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    assert len(png) < SCREENSHOT_LIMIT, len(png)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png)


def test_log_in_change_blur_upload_a_background_and_log_out(camera, browser_context, tmp_path):
    base, _ = camera
    page = browser_context.new_page()
    console_errors = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    log_in(page, base)

    # The status panel shows the real pipeline running at preview size.
    wait_until(page, "parseFloat(document.getElementById('st-fps').textContent) > 1")
    assert page.locator("#service-state").inner_text() == "Connected"
    assert page.locator("#st-state").inner_text() in ("Preview only", "Streaming")
    assert re.fullmatch(r"\d+\.\d ms", page.locator("#st-inference").inner_text())
    for view in ("original", "mask", "output"):
        wait_for_new_frames(page, view, 1)

    # Blur strength, from the keyboard: the output preview follows, the original does not.
    default = blur_left(page)
    set_slider(page, "blur_strength", "Home")
    assert page.locator("#o-blur_strength").inner_text() == "1"
    light = blur_left_once(page, lambda value: value > default * 2, f"more detail than {default:.4f}")
    set_slider(page, "blur_strength", "End")
    assert page.locator("#o-blur_strength").inner_text() == "100"
    blur_left_once(page, lambda value: value < light / 3, f"under a third of {light:.4f}")
    assert page.request.get(base + "/api/settings").json()["blur_strength"] == 100

    # The screenshot for the README: default blur, everything live.
    set_slider(page, "blur_strength", "PageDown")  # 100 -> 90
    wait_for_new_frames(page, "output")
    wait_until(page, "document.getElementById('toast').classList.contains('show') === false")
    time.sleep(0.3)  # let the toast finish sliding away
    save_screenshot(page)

    # A replacement background: upload it, pick "Replace", see it behind the person.
    picture = tmp_path / "violet.png"
    cv2.imwrite(str(picture), np.full((480, 640, 3), UPLOAD_COLOUR_BGR, np.uint8))
    page.locator("#background-file").set_input_files(str(picture))
    page.get_by_role("button", name="Upload and use").click()
    wait_until(page, "document.getElementById('background-current').textContent.includes('background')")
    page.locator('label[for="f-effect-replace"]').click()
    wait_until(page, "document.getElementById('toast').textContent === 'Saved'")
    wait_for_new_frames(page, "output")
    backdrop = corners(shown_image(page, "output")).reshape(-1, 3).mean(axis=0)
    assert np.abs(backdrop - UPLOAD_COLOUR_BGR).max() < 40, backdrop

    # A non-image upload is refused on the page, naming the problem; nothing changes.
    junk = tmp_path / "notes.png"
    junk.write_text("this is not a picture")
    page.locator("#background-file").set_input_files(str(junk))
    page.get_by_role("button", name="Upload and use").click()
    wait_until(page, "document.getElementById('toast').textContent === 'Upload failed'")
    assert page.request.get(base + "/api/settings").json()["effect"] == "replace"

    # Log out: back to the login page, and the API no longer answers this browser.
    page.get_by_role("button", name="Log out").click()
    # A preview or status poll still in flight comes back 401 and sends the page to the login page
    # too, remembering where it was: either URL is the login page.
    page.wait_for_url(re.compile(r".*/login(\?next=/)?$"))
    assert page.request.get(base + "/api/settings").status == 401
    page.goto(base + "/")
    assert "/login" in page.url
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors


def test_the_page_fits_a_phone_screen(camera, browser_context):
    base, _ = camera
    page = browser_context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, base)
    wait_for_new_frames(page, "output", 1)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator('img[data-view="output"]').bounding_box()
    assert box["width"] > 300  # the previews stack, each nearly full width


def test_a_wrong_password_shows_an_error_on_the_login_page(camera, browser_context):
    base, _ = camera
    page = browser_context.new_page()
    page.goto(base + "/login")
    page.get_by_label("Admin password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    assert page.locator(".flash").inner_text() == "Wrong password."
    assert page.request.get(base + "/api/status").status == 401


def test_the_page_says_when_the_camera_service_is_not_running(chromium_available, browser_context, workdir):
    """`blurcam web` on its own, with no daemon behind its control socket."""
    port = free_port()
    (workdir / "alone").mkdir(exist_ok=True)
    service = Service(["web", "--listen", f"127.0.0.1:{port}", "--state-dir", str(workdir / "alone"),
                       "--control-socket", str(workdir / "alone" / "missing.sock")], workdir / "alone")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/login", service.process, service.log)
        page = browser_context.new_page()
        log_in(page, base)
        page.wait_for_selector("#service-banner", state="visible")
        assert "Camera service not running" in page.locator("#service-banner").inner_text()
        assert page.locator("#f-blur_strength").is_disabled()
    finally:
        service.stop()
