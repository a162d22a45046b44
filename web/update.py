"""Software update from the settings page: /api/update (behind login and CSRF like every write).

The operator gives the URL of a bundle (the fleet's download server, or a laptop on the same
network); the device downloads it itself. No upload: waitress buffers a whole request body
before the app can check the login, so accepting bundle-sized bodies would let anyone fill the
device's memory or card. The web process has no privileges: it only leaves a request in its
spool directory, blurcam-update-request.path starts `blurcam update run-request` as root, which
downloads, installs through RAUC (signature checked there), writes status.json and reboots into
the new slot on trial (appliance/update.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request

from appliance import safejson
from appliance.settings import write_atomically
from appliance.update import REQUEST_FILE, STATUS_FILE, url_problem

bp = Blueprint("update", __name__)


def spool() -> Path:
    path = Path(current_app.config.get("UPDATE_SPOOL") or Path(current_app.config["STATE_DIR"]) / "update")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _busy(where: Path) -> bool:
    if (where / REQUEST_FILE).exists():
        return True
    try:
        return json.loads((where / STATUS_FILE).read_text()).get("state") in ("installing", "rebooting")
    except (OSError, ValueError):
        return False


def _refuse(code: int, summary: str, field: str, reason: str):
    return jsonify(error=summary, errors={field: reason}), code


def _leave_request(where: Path, req: dict) -> None:
    (where / STATUS_FILE).unlink(missing_ok=True)
    write_atomically(where / REQUEST_FILE, json.dumps(req).encode())


@bp.get("")
def status():
    """{"state": "idle"|"requested"|"installing"|"failed"|"rebooting", ...}"""
    where = spool()
    if (where / REQUEST_FILE).exists():
        return jsonify(state="requested")
    try:
        return jsonify(json.loads((where / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return jsonify(state="idle")


@bp.post("")
def install_from_url():
    """{"url": "https://.../blurcam.raucb"}: the device downloads it."""
    try:  # with limits: json.loads on 5000 nested brackets raises RecursionError, a 500
        body = safejson.loads(request.get_data(cache=False) or b"null")
    except safejson.JsonError as exc:
        return _refuse(400, "malformed request", "body", str(exc))
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        return _refuse(400, "invalid request", "url", 'send {"url": "http(s)://..."} as JSON')
    if (problem := url_problem(url)) is not None:
        return _refuse(400, "invalid request", "url", problem)
    where = spool()
    if _busy(where):
        return _refuse(409, "an update is already in progress", "url", "wait until it has finished")
    _leave_request(where, {"url": url})
    return jsonify(state="requested"), 202
