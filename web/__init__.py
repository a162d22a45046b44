"""The settings page: a Flask application that talks to the daemon over the control socket.

It owns no device. Everything except the login page and its static assets needs a login.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, current_app, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from appliance import fleet
from appliance.control import ControlClient
from appliance.storage import StorageError, remove_stale_temp_files, write_atomically

from . import api, auth, metrics, network, update, views
from . import backgrounds, presets  # noqa: F401  (they add their routes to api.bp)

log = logging.getLogger(__name__)

SECRET_KEY_FILE = "web-secret.key"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_BODY_BYTES = 64 * 1024  # every request body but an upload's
# What a multipart upload adds around the file: the WSGI server refuses anything larger unread.
MAX_REQUEST_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

# No inline script or style anywhere: the page's JS and CSS are files under /static.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class SessionCookies(SecureCookieSessionInterface):
    """Signed cookie sessions: HttpOnly and SameSite=Strict always, Secure whenever the request
    came over HTTPS (or SESSION_COOKIE_SECURE forces it).

    The device usually serves plain HTTP on the LAN (no certificate a browser would trust for a
    .local name); a Secure cookie would never come back over HTTP and nobody could log in.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def _load_secret_key(state_dir: Path) -> bytes:
    """The session signing key, made once per device and kept private to the web user."""
    path = state_dir / SECRET_KEY_FILE
    if path.exists():
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    key = secrets.token_bytes(32)
    try:
        write_atomically(path, key, what="session key")
    except StorageError as exc:  # the page must still come up: logins then last until a restart
        log.warning("%s Logins will end when the settings page restarts.", exc)
    return key


def create_app(config: dict[str, Any]) -> Flask:
    """Build the app. Required: STATE_DIR, and CONTROL_SOCKET (or a CONTROL client object).
    Optional: FLEET_FILE, ADMIN_PASSWORD, ALLOWED_HOSTS (names besides the device's own),
    NETWORK (a network.DeviceNetwork), LOGIN_THROTTLE (a LoginThrottle), MAX_CONTENT_LENGTH
    (bodies of UPLOAD_ENDPOINTS; every other body is held to MAX_BODY_BYTES)."""
    app = Flask(__name__)
    state_dir = Path(config["STATE_DIR"])
    state_dir.mkdir(parents=True, exist_ok=True)
    # Temp files a power cut left beside the files this process writes.
    remove_stale_temp_files(state_dir, (SECRET_KEY_FILE, auth.PASSWORD_FILE,
                                        presets.PRESETS_FILE))
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        MAX_BODY_BYTES=MAX_BODY_BYTES,
        # Endpoints that take a file; a blueprint that adds one puts its endpoint name here.
        UPLOAD_ENDPOINTS={"api.upload_background"},
        SESSION_COOKIE_NAME="blurcam_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=False,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the login session it belongs to
        # The Referer check flask-wtf adds on HTTPS would break API scripts; SameSite=Strict and
        # the per-session token already stop cross-site writes.
        WTF_CSRF_SSL_STRICT=False,
        WTF_CSRF_HEADERS=["X-CSRF-Token"],
        PUBLIC_ENDPOINTS={"static", "auth.login_page", "auth.login_form", "api.login"},
        TOKEN_ENDPOINTS={"metrics.metrics"},  # a login session or the fleet's metrics token
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    app.config.update({k: v for k, v in config.items() if k.isupper()})
    app.secret_key = _load_secret_key(state_dir)
    app.session_interface = SessionCookies()

    app.extensions["blurcam.control"] = config.get("CONTROL") or ControlClient(
        config["CONTROL_SOCKET"], timeout=config.get("CONTROL_TIMEOUT", 5.0))
    app.extensions["blurcam.passwords"] = auth.PasswordStore(
        state_dir, config.get("FLEET_FILE"), config.get("ADMIN_PASSWORD"))
    app.extensions["blurcam.sessions"] = auth.SessionRegistry(
        app.config["PERMANENT_SESSION_LIFETIME"].total_seconds())
    app.extensions["blurcam.metrics_token"] = fleet.read_table(config.get("FLEET_FILE"), "web").metrics_token
    app.extensions["blurcam.network"] = config.get("NETWORK") or network.DeviceNetwork(
        config.get("ALLOWED_HOSTS", ()))
    app.extensions["blurcam.throttle"] = config.get("LOGIN_THROTTLE") or auth.LoginThrottle(
        trusted=app.extensions["blurcam.network"].is_local_link)

    # Order matters: a foreign Host or Origin is refused before anything else, the body limit is
    # set before anything reads the body, and the login check runs before the CSRF check (a
    # stranger gets 401, not a CSRF message).
    app.before_request(_only_own_host_and_origin)
    app.before_request(_limit_body)
    app.before_request(auth.login_required_everywhere)
    csrf = CSRFProtect(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    app.register_blueprint(update.bp, url_prefix="/api/update")
    app.register_blueprint(metrics.bp)
    csrf.exempt(api.login)  # JSON-only (a cross-site form cannot send it); issues the token

    app.after_request(_security_headers)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _refuse(code: int, summary: str, field: str, reason: str):
    if request.path.startswith("/api/"):
        return jsonify(error=summary, errors={field: reason}), code
    return views.error_page(code, f"{summary}: {reason}")


def _only_own_host_and_origin():
    """Against DNS rebinding and cross-site writes: see web/network.py."""
    net: network.DeviceNetwork = current_app.extensions["blurcam.network"]
    host = request.headers.get("Host", "")
    if not net.is_own_host(host):
        return _refuse(400, "unknown host", "Host",
                       f"{host!r} is not a name or address of this device; use its own name "
                       "(hostname or hostname.local) or IP address")
    origin = request.headers.get("Origin")
    if request.method in WRITE_METHODS and origin is not None and not network.same_origin(origin, host):
        return _refuse(403, "cross-origin request refused", "Origin",
                       f"a write from {origin!r} to {host!r}: only this device's own page may write")
    return None


def _limit_body():
    if request.endpoint not in current_app.config["UPLOAD_ENDPOINTS"]:
        request.max_content_length = current_app.config["MAX_BODY_BYTES"]


def _security_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _csrf_error(exc: CSRFError):
    if request.path.startswith("/api/"):
        return jsonify(error="CSRF check failed",
                       errors={"X-CSRF-Token": f"{exc.description} Send the csrf_token from "
                                               "POST /api/login in this header."}), 403
    return views.error_page(403, "This form has expired. Reload the page and try again.")


def _http_error(exc: HTTPException):
    """JSON errors under /api/, a plain page elsewhere."""
    if request.path.startswith("/api/"):
        body: dict[str, Any] = {"error": exc.name}
        if exc.code == 413:
            limit = request.max_content_length or MAX_UPLOAD_BYTES
            if request.endpoint in current_app.config["UPLOAD_ENDPOINTS"]:
                body["errors"] = {"image": f"upload larger than the {limit // (1024 * 1024)} MiB limit"}
            else:
                body["errors"] = {"body": f"request body larger than the {limit // 1024} KiB limit"}
        elif exc.description:
            body["detail"] = exc.description
        return jsonify(body), exc.code
    return views.error_page(exc.code or 500, exc.description or exc.name)
