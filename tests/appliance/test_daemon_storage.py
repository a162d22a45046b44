"""The daemon's own files under real faults: an uploaded background that cannot be chosen
(its settings change was not saved) is not left behind."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance.daemon import Controller
from appliance.storage import StorageError
from tests.support import capabilities, faultfs

pytestmark = capabilities.needs(faultfs.unavailable())


def test_a_background_whose_choice_cannot_be_saved_is_removed_again():
    picture = cv2.imencode(".jpg", np.full((90, 160, 3), 120, np.uint8))[1].tobytes()

    def scenario(state: Path) -> dict:
        (state / "backgrounds").mkdir()
        faultfs.mount_tmpfs(state / "backgrounds", "1m")  # room for the picture ...
        controller = Controller(state, source_spec="demo")
        faultfs.fill(state)  # ... but none for settings.json
        try:
            controller.set_background(picture)
            error = None
        except StorageError as exc:
            error = str(exc)
        return {"error": error, "background": controller.settings.current.background,
                "pictures": sorted(p.name for p in (state / "backgrounds").iterdir())}

    out = faultfs.in_private_tmpfs(scenario, size="64k")
    assert out["error"] == "Settings not saved: the device's storage is full. Nothing was changed."
    assert out["background"] == ""
    assert out["pictures"] == []
