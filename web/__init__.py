"""The settings page: a Flask application that talks to the daemon over the control socket.

It owns no device. Everything except the login page and its static assets needs a login.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from appliance.control import ControlClient
from appliance.settings import write_atomically

from . import api, auth, views

SECRET_KEY_FILE = "web-secret.key"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024

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
    write_atomically(path, key)
    os.chmod(path, 0o600)
    return key


def create_app(config: dict[str, Any]) -> Flask:
    """Build the app. Required: STATE_DIR, and CONTROL_SOCKET (or a CONTROL client object).
    Optional: FLEET_FILE, ADMIN_PASSWORD, MAX_CONTENT_LENGTH, LOGIN_THROTTLE (a LoginThrottle)."""
    app = Flask(__name__)
    state_dir = Path(config["STATE_DIR"])
    state_dir.mkdir(parents=True, exist_ok=True)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
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
    app.extensions["blurcam.throttle"] = config.get("LOGIN_THROTTLE") or auth.LoginThrottle()

    # The login check runs before the CSRF check, so a stranger gets 401, not a CSRF message.
    app.before_request(auth.login_required_everywhere)
    csrf = CSRFProtect(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    csrf.exempt(api.login)  # JSON-only (a cross-site form cannot send it); issues the token

    app.after_request(_security_headers)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    return app


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
            body["errors"] = {"image": f"upload larger than the {limit // (1024 * 1024)} MiB limit"}
        elif exc.description:
            body["detail"] = exc.description
        return jsonify(body), exc.code
    return views.error_page(exc.code or 500, exc.description or exc.name)
