"""The JSON API under /api/: the same things the page does, for scripts and fleets (see web/API.md).

Every error is JSON: {"error": summary, "errors": {field: reason}} for bad input.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask_wtf.csrf import generate_csrf

from appliance import safejson
from appliance.control import ControlClient, ControlError
from appliance.settings import Settings, SettingsError
from appliance.storage import StorageError

from . import auth

bp = Blueprint("api", __name__)

MJPEG_BOUNDARY = "blurcamframe"
MJPEG_MAX_FPS = 30.0  # the pipeline sets the pace; this only caps a very fast one
MJPEG_STALL_S = 10.0  # a stream with no new frame for this long ends
MAX_MJPEG_STREAMS = 3  # each open stream holds a server thread
_mjpeg_streams = threading.BoundedSemaphore(MAX_MJPEG_STREAMS)


def control() -> ControlClient:
    return current_app.extensions["blurcam.control"]


def bad_request(errors: dict[str, str], summary: str = "invalid request", code: int = 400):
    return jsonify(error=summary, errors=errors), code


class BadJson(ValueError):
    def __init__(self, reason: str):
        self.reason = reason


def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or BadJson saying what is wrong with it."""
    if not request.is_json:
        raise BadJson("send a JSON object with Content-Type: application/json")
    try:
        data = safejson.loads(request.get_data(cache=False) or b"")
    except safejson.JsonError as exc:
        raise BadJson(str(exc)) from None
    if not isinstance(data, dict):
        raise BadJson(f"expected a JSON object, got {type(data).__name__}")
    return data


@bp.errorhandler(BadJson)
def _bad_json(exc: BadJson):
    return bad_request({"body": exc.reason}, "malformed request")


@bp.errorhandler(SettingsError)
def _settings_error(exc: SettingsError):
    return bad_request(exc.errors, "invalid settings")


@bp.errorhandler(StorageError)
def _storage_error(exc: StorageError):
    # 507 Insufficient Storage: the request was fine, the device could not keep it.
    return jsonify(error="not saved", detail=str(exc)), 507


@bp.errorhandler(ControlError)
def _control_error(exc: ControlError):
    return jsonify(error="camera service not available", detail=str(exc)), 503


def _throttled(wait: float, field: str):
    retry = int(wait) + 1
    return (jsonify(error="too many wrong passwords", errors={field: f"try again in {retry} s"}),
            429, {"Retry-After": str(retry)})


@bp.post("/login")
def login():
    body = json_object()
    if not isinstance(body.get("password"), str):
        return bad_request({"password": "required, a string"})
    outcome, wait = auth.attempt_login(body["password"])
    if outcome == auth.LoginOutcome.THROTTLED:
        return _throttled(wait, "password")
    if outcome == auth.LoginOutcome.WRONG:
        return jsonify(error="wrong password", errors={"password": "wrong password"}), 401
    return jsonify(csrf_token=generate_csrf())


@bp.post("/logout")
def logout():
    auth.end_session()
    return "", 204


@bp.post("/password")
def change_password():
    body = json_object()
    try:
        outcome, wait = auth.attempt_password_change(body.get("current_password"), body.get("new_password"))
    except auth.PasswordError as exc:
        return bad_request({exc.field: exc.reason}, "password not changed")
    if outcome == auth.LoginOutcome.THROTTLED:
        return _throttled(wait, "current_password")
    if outcome == auth.LoginOutcome.WRONG:
        return bad_request({"current_password": "wrong password"}, "password not changed")
    # Every other session ends with the old password; this one continues with a new token.
    auth.end_all_sessions()
    return jsonify(csrf_token=auth.start_session())


@bp.get("/settings")
def get_settings():
    return jsonify(control().get_settings())


@bp.put("/settings")
def put_settings():
    return jsonify(control().update_settings(json_object()))


@bp.get("/schema")
def schema():
    """The JSON schema of the settings: types, ranges and defaults."""
    return jsonify(Settings.model_json_schema())


@bp.get("/status")
def status():
    return jsonify(control().status())


@bp.post("/background")
def upload_background():
    upload = request.files.get("image")
    if upload is None:
        return bad_request({"image": "missing: send the picture as multipart form field 'image'"})
    data = upload.read()
    if not data:
        return bad_request({"image": "the uploaded file is empty"})
    return jsonify(control().set_background(data))


@bp.get("/preview/<view>.jpg")
def preview_jpeg(view: str):  # the daemon checks the view: a bad one is a 400 naming the views
    return Response(control().preview(view), mimetype="image/jpeg")


@bp.get("/preview/<view>.mjpg")
def preview_mjpeg(view: str):
    """A multipart MJPEG stream: each new frame of the pipeline once, as soon as it is ready."""
    if not _mjpeg_streams.acquire(blocking=False):
        return jsonify(error="too many preview streams open",
                       detail=f"at most {MAX_MJPEG_STREAMS}; use /api/preview/{view}.jpg"), 503
    client = control()
    try:
        first = client.preview_next(view, 0)  # fail with a proper 503 before the stream starts
    except BaseException:
        _mjpeg_streams.release()
        raise

    def frames():
        seq, jpeg = first
        last_new = time.monotonic()
        while True:
            yield (f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                   f"Content-Length: {len(jpeg)}\r\nX-Frame: {seq}\r\n\r\n").encode() + jpeg + b"\r\n"
            sent = time.monotonic()
            while True:
                try:
                    newer, jpeg = client.preview_next(view, seq)
                except ControlError:
                    return  # daemon went away: end the stream; the page reconnects with back-off
                if newer != seq:
                    break
                if time.monotonic() - last_new > MJPEG_STALL_S:
                    return  # the camera stalled: end the stream, the page says so and retries
            seq, last_new = newer, time.monotonic()
            time.sleep(max(0.0, 1 / MJPEG_MAX_FPS - (last_new - sent)))

    # The generator needs no request context: it holds its own client.
    response = Response(frames(), mimetype=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}")
    # The server closes every response it started, however the stream ended: free the slot then.
    response.call_on_close(_mjpeg_streams.release)
    return response
