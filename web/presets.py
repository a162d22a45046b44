"""Whole-settings operations for the page and for scripts: named presets, reset to defaults,
export to a file and import from one. Routes live under /api beside the rest (see web/API.md).

Presets are kept by the web process in its state directory (presets.json): a preset is how the
picture looks (effect, background, outline, image and camera controls), not how the device is
wired up, so the USB and model-runtime settings are left out of it.
"""

from __future__ import annotations

import json
import socket
import threading
import unicodedata
from pathlib import Path
from typing import Any

from flask import Response, current_app, jsonify

from appliance import backgrounds
from appliance.settings import SettingsError, write_atomically

from .api import BadJson, bp, control, json_object

PRESETS_FILE = "presets.json"
MAX_PRESETS = 20
MAX_NAME = 40
# How the device is set up rather than how the picture looks: not part of a preset.
NOT_IN_PRESETS = ("resolutions", "usb_networking", "inference_threads", "jpeg_quality")
EXPORT_FORMAT = "blurcam-settings"
EXPORT_VERSION = 1


class PresetStore:
    """presets.json in the web state directory, written whole and atomically."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / PRESETS_FILE
        self._lock = threading.Lock()

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise SettingsError({"presets": f"{self.path} is unreadable ({exc}); delete it to start over"}) from None
        presets = data.get("presets") if isinstance(data, dict) else None
        return presets if isinstance(presets, dict) else {}

    def save(self, name: str, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        with self._lock:
            presets = self.load()
            if name not in presets and len(presets) >= MAX_PRESETS:
                raise SettingsError({"name": f"at most {MAX_PRESETS} presets; delete one first"})
            presets[name] = values
            self._write(presets)
            return presets

    def delete(self, name: str) -> bool:
        with self._lock:
            presets = self.load()
            if presets.pop(name, None) is None:
                return False
            self._write(presets)
            return True

    def _write(self, presets: dict[str, dict[str, Any]]) -> None:
        write_atomically(self.path, json.dumps({"presets": presets}, indent=2, ensure_ascii=False).encode(),
                         what="presets")


def store() -> PresetStore:
    app = current_app
    if "blurcam.presets" not in app.extensions:
        app.extensions["blurcam.presets"] = PresetStore(app.config["STATE_DIR"])
    return app.extensions["blurcam.presets"]


def check_name(name: str) -> str:
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise SettingsError({"name": "a preset needs a name"})
    if len(name) > MAX_NAME:
        raise SettingsError({"name": f"at most {MAX_NAME} characters; got {len(name)}"})
    if any(unicodedata.category(ch).startswith("C") or ch == "/" for ch in name):
        raise SettingsError({"name": "letters, digits, spaces and punctuation only (no '/')"})
    return name


def _listing(presets: dict[str, dict[str, Any]]):
    return jsonify(presets=[{"name": n, "settings": v} for n, v in sorted(presets.items(), key=lambda i: i[0].lower())])


@bp.get("/presets")
def list_presets():
    return _listing(store().load())


@bp.put("/presets/<name>")
def save_preset(name: str):
    """Save the settings in effect now under `name` (replacing a preset of that name)."""
    name = check_name(name)
    current = control().get_settings()
    values = {k: v for k, v in current.items() if k not in NOT_IN_PRESETS}
    return _listing(store().save(name, values))


@bp.post("/presets/<name>/apply")
def apply_preset(name: str):
    values = store().load().get(check_name(name))
    if values is None:
        return jsonify(error="no such preset", errors={"name": f"no preset named {name!r}"}), 404
    return jsonify(control().update_settings(values))


@bp.delete("/presets/<name>")
def delete_preset(name: str):
    if not store().delete(check_name(name)):
        return jsonify(error="no such preset", errors={"name": f"no preset named {name!r}"}), 404
    return "", 204


@bp.post("/settings/reset")
def reset_settings():
    """Every setting back to its default (the fleet file's value where it sets one)."""
    return jsonify(control().reset_settings())


@bp.get("/settings/export")
def export_settings():
    """All settings as a file to keep or to load into another BlurCam. An uploaded background
    stays on this device (the file names it, but another camera would not have the picture)."""
    current = control().get_settings()
    if backgrounds.is_upload(current.get("background", "")):
        current["background"] = ""
    body = json.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "settings": current},
                      indent=2, ensure_ascii=False) + "\n"
    host = "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch in "-_") or "blurcam"
    return Response(body, mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="blurcam-settings-{host}.json"'})


@bp.post("/settings/import")
def import_settings():
    """Apply a file made by export: checked like any change, all or nothing."""
    data = json_object()
    if data.get("format") != EXPORT_FORMAT:
        raise BadJson(f"not a BlurCam settings file (expected \"format\": \"{EXPORT_FORMAT}\")")
    if data.get("version") != EXPORT_VERSION:
        raise BadJson(f"settings file version {data.get('version')!r}; this camera reads version {EXPORT_VERSION}")
    settings = data.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise BadJson("\"settings\" must be an object of setting names to values")
    return jsonify(control().update_settings(settings))
