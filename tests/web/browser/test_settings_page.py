"""The settings page in headless Chromium, against the real daemon running the demo camera:
logging in (and getting back in without the password), changing the effect, the camera service
going away and coming back, a change made before the page has finished loading."""

from __future__ import annotations

import re
import shlex
import subprocess
import time

import cv2
import numpy as np
import pytest

from tests.web.browser.conftest import Service, free_port, wait_for_http
from tests.web.browser.helpers import (corners, log_in, pick_view, sharpness, shown_image, wait_for_frames,
                                       wait_saved, wait_until)

pytestmark = pytest.mark.browser

UPLOAD_COLOUR_BGR = (200, 40, 160)  # a violet no demo room contains


def blur_left(page) -> float:
    """Background detail left in the output relative to the original, from one side-by-side
    frame (so both halves show the same moment): 1.0 means no blur."""
    both = shown_image(page)
    third = both.shape[1] // 3
    return sharpness(both[:, 2 * third:]) / sharpness(both[:, :third])


def blur_left_once(page, condition, wanted: str, timeout: float = 20.0) -> float:
    """The first blur_left value meeting `condition` in the next frames (a busy machine may
    still deliver a frame or two made before the change)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wait_for_frames(page, 1)
        seen.append(blur_left(page))
        if condition(seen[-1]):
            return seen[-1]
    raise AssertionError(f"preview never showed {wanted}; saw {[round(v, 4) for v in seen]}")


def set_slider(page, name: str, key: str) -> None:
    """Operate a slider from the keyboard, as a user without a mouse would."""
    page.locator(f"#f-{name}").focus()
    page.keyboard.press(key)
    wait_saved(page)


def test_log_in_change_blur_upload_a_background_and_log_out(desktop, camera, tmp_path):
    page, base = desktop, camera[0]
    # The status panel shows the real pipeline running at preview size.
    wait_until(page, "parseFloat(document.getElementById('st-fps').textContent) > 0")
    assert re.fullmatch(r"\d+\.\d ms", page.locator("#st-inference").inner_text())
    # ...with its capture-to-output latency, and every frame composited with its own mask.
    wait_until(page, "document.getElementById('st-mask-age').textContent !== '–'")
    assert re.fullmatch(r"\d+ / \d+ ms", page.locator("#st-latency").inner_text())
    assert page.locator("#st-mask-age").inner_text() == "0 frames · 0 ms"
    assert page.locator("#usb-state").inner_text().strip() == "No computer connected"

    # Blur strength, from the keyboard: the output follows, the original does not.
    pick_view(page, "all")
    default = blur_left(page)
    set_slider(page, "blur_strength", "Home")
    assert page.locator("#o-blur_strength").inner_text() == "1"
    light = blur_left_once(page, lambda value: value > default * 2, f"more detail than {default:.4f}")
    set_slider(page, "blur_strength", "End")
    assert page.locator("#o-blur_strength").inner_text() == "100"
    blur_left_once(page, lambda value: value < light / 3, f"under a third of {light:.4f}")
    assert page.request.get(base + "/api/settings").json()["blur_strength"] == 100

    # A picture of one's own: upload it and it is in use, behind the person.
    picture = tmp_path / "violet.png"
    cv2.imwrite(str(picture), np.full((480, 640, 3), UPLOAD_COLOUR_BGR, np.uint8))
    page.locator("#background-file").set_input_files(str(picture))
    page.get_by_role("button", name="Upload and use").click()
    wait_until(page, "document.querySelector('.thumb[aria-checked=\"true\"]')?.textContent === 'Your picture'")
    page.locator('label[for="f-effect-replace"]').click()
    wait_saved(page)
    pick_view(page, "output")
    wait_for_frames(page, 2)
    backdrop = corners(shown_image(page)).reshape(-1, 3).mean(axis=0)
    assert np.abs(backdrop - UPLOAD_COLOUR_BGR).max() < 40, backdrop

    # Log out: back to the login page, and the API no longer answers this browser.
    page.get_by_role("button", name="Log out").click()
    # A preview or status request still in flight comes back 401 and sends the page to the login
    # page too, remembering where it was: either URL is the login page.
    page.wait_for_url(re.compile(r".*/login(\?next=/)?$"))
    assert page.request.get(base + "/api/settings").status == 401


def test_a_wrong_password_shows_an_error_on_the_login_page(camera, browser_context):
    base, _ = camera
    page = browser_context.new_page()
    page.goto(base + "/login")
    page.get_by_label("Admin password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    assert page.locator(".flash").inner_text() == "Wrong password."
    assert page.request.get(base + "/api/status").status == 401


def test_the_login_page_gives_the_command_that_gets_a_new_password_here(browser_context, workdir):
    """On a PC: the page names this installation's state directory, and the command works."""
    port = free_port()
    state = workdir / "lost-password"
    service = Service(["web", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                       "--control-socket", str(state / "missing.sock")], state, password=None)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/login", service.process, service.log)
        page = browser_context.new_page()
        page.goto(base + "/login")
        hint = page.locator("#password-hint")
        command = hint.locator("code").last.inner_text()
        assert str(state.resolve()) in command and "journalctl" not in hint.inner_text()
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        new_password = re.search(r"New password for the settings page: (\S+)", done.stdout).group(1)
        page.get_by_label("Admin password").fill(new_password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(base + "/")
    finally:
        service.stop()


def test_without_the_camera_service_the_page_says_so_backs_off_and_recovers(browser_context, workdir):
    """`blurcam web` with no daemon behind its socket: a few requests, no broken pictures; then
    the daemon starts and the page comes back by itself."""
    port = free_port()
    state = workdir / "down"
    web = Service(["web", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state / "web"),
                   "--control-socket", str(state / "daemon" / "control.sock")], state / "web")
    daemon = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/login", web.process, web.log)
        page = browser_context.new_page()
        log_in(page, base)
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.wait_for_selector("#service-banner", state="visible")
        assert "Camera service not running" in page.locator("#service-banner").inner_text()
        assert page.locator("#f-blur_strength").is_disabled()
        assert "camera service is not running" in page.locator("#preview-state").inner_text()
        page.wait_for_timeout(10_000)  # not time.sleep: Playwright records requests only while it runs
        print(f"\n{len(requests)} requests in 10 s with the service down: {requests}")
        assert len(requests) <= 6, requests  # was ~20 a second
        assert not [u for u in requests if "/preview/" in u]
        broken = page.evaluate("[...document.images].filter((i) => i.complete && i.naturalWidth === 0).length")
        assert broken == 0

        daemon = Service(["run", "--source", "demo", "--state-dir", str(state / "daemon")], state / "daemon")
        wait_until(page, "document.getElementById('service-banner').hidden", timeout=90)
        wait_for_frames(page, 2, timeout=60)
        assert page.locator("#f-blur_strength").is_enabled()
    finally:
        if daemon:
            daemon.stop()
        web.stop()


def test_a_change_made_while_the_page_loads_is_not_undone_by_the_load(desktop, camera):
    """The page asks the daemon for its settings when it opens; a control changed before that
    answer comes keeps the user's value, and the answer, older than the change, is not shown."""
    page, base = desktop, camera[0]
    held = []  # the page's GET /api/settings, answered by the daemon but held back on the way

    def hold(route):
        if route.request.method == "GET":
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.route("**/api/settings", hold)
    page.reload()
    deadline = time.monotonic() + 20
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert held, "the page never asked for its settings"
    page.locator("#f-mirror").check()
    wait_saved(page)
    assert page.request.get(base + "/api/settings").json()["mirror"] is True
    for route, answer in held:
        route.fulfill(response=answer)  # the load's answer, from before the change, arrives last
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # the old answer would undo the box within milliseconds
        assert page.locator("#f-mirror").is_checked(), "the late load answer undid the user's change"
        page.wait_for_timeout(50)
