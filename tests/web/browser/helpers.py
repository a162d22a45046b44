"""What the browser tests do on the page: log in, wait for frames, read the preview's pixels."""

from __future__ import annotations

import base64
import time

import cv2
import numpy as np

from tests.web.browser.conftest import PASSWORD


def wait_until(page, expression: str, timeout: float = 20.0) -> None:
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


def reset_settings(page, base: str) -> None:
    """Back to the defaults through the API, with this page's session and token."""
    token = page.evaluate("document.querySelector('meta[name=\"csrf-token\"]').content")
    response = page.request.post(base + "/api/settings/reset", headers={"X-CSRF-Token": token})
    assert response.ok, response.text()
    page.reload()


def api_put(page, base: str, path: str, body: dict) -> dict:
    token = page.evaluate("document.querySelector('meta[name=\"csrf-token\"]').content")
    response = page.request.put(base + path, data=body, headers={"X-CSRF-Token": token})
    assert response.ok, response.text()
    return response.json()


def frames(page) -> int:
    return int(page.evaluate("Number(document.getElementById('preview').dataset.frames || 0)"))


def frame_number(page) -> int:
    """The pipeline's number of the frame on the canvas."""
    return int(page.evaluate("Number(document.getElementById('preview').dataset.seq || 0)"))


def wait_for_frames(page, count: int = 2, view: str | None = None, timeout: float = 30.0) -> None:
    """Frames already in flight may predate a change; wait until `count` newer ones are drawn."""
    start = frames(page)
    check = f"Number(document.getElementById('preview').dataset.frames || 0) >= {start + count}"
    if view:
        check += f" && document.getElementById('preview').dataset.view === '{view}'"
    wait_until(page, check, timeout)


def wait_saved(page, what: str = "Saved") -> None:
    wait_until(page, f"document.getElementById('toast').textContent === {what!r}")


def shown_image(page) -> np.ndarray:
    """The pixels the preview canvas shows now (BGR)."""
    data_url = page.evaluate("document.getElementById('preview').toDataURL('image/png')")
    png = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def corners(image: np.ndarray) -> np.ndarray:
    """The top corners: background in every demo scene (the person stands in the middle)."""
    h, w = image.shape[:2]
    return np.hstack([image[: h // 4, : w // 5], image[: h // 4, -w // 5:]])


def sharpness(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(corners(image), cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def pick_view(page, view: str) -> None:
    page.locator(f'label[for="view-{view}"]').click()
    try:
        wait_for_frames(page, 2, view=view)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the preview says: {page.locator('#preview-state').inner_text()!r}") from None


def in_viewport(page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"] + 0.5 \
        and box["x"] >= 0 and box["x"] + box["width"] <= size["width"] + 0.5
