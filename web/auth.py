"""Who may use the settings page: the admin password, login sessions and the login throttle.

There is no shared default password. Where the password comes from, first match wins:
  1. BLURCAM_ADMIN_PASSWORD in the environment (tests, fleets that inject secrets);
  2. a password the user set on the page (its hash in the web state dir);
  3. `[web] admin_password_hash` in the fleet file (set at image build);
  4. otherwise one is generated on first start, printed once to the log (the journal), and only
     its slow hash (scrypt) is stored.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import secrets
import threading
import time
from pathlib import Path
from collections.abc import Callable

from flask import (Blueprint, current_app, flash, g, jsonify, redirect, render_template, request,
                   session, url_for)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import generate_csrf
from werkzeug.security import check_password_hash, generate_password_hash

from appliance import fleet
from appliance.storage import StorageError, set_aside, write_atomically

log = logging.getLogger(__name__)

PASSWORD_FILE = "admin-password.hash"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
# No 0/o, 1/l/i: the generated password is read off a log line and typed on a phone.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_HASH_PREFIXES = ("scrypt:", "pbkdf2:")  # what werkzeug.security.generate_password_hash makes
_HASH_CHECKS = threading.BoundedSemaphore(2)


class PasswordError(ValueError):
    """A password change that was refused; `field` names what was wrong."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


def generate_password() -> str:
    """Four groups of four characters: about 79 bits, easy to type."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(4))


def set_new_password(state_dir: Path) -> str:
    """Generate a new admin password, save its hash for the web process (which picks it up
    and ends every session) and return it. For `blurcam password reset` and factory reset."""
    password = generate_password()
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    # Run as root on the device: the file must stay readable by the web service's own user.
    write_atomically(state_dir / PASSWORD_FILE, generate_password_hash(password).encode() + b"\n",
                     what="password", owner_of=state_dir)
    return password


class PasswordStore:
    """The one admin password, stored only as a slow hash."""

    def __init__(self, state_dir: Path, fleet_file: Path | None = None,
                 env_password: str | None = None):
        self.path = Path(state_dir) / PASSWORD_FILE
        self._lock = threading.Lock()
        self.from_env = bool(env_password)
        # The environment already holds this one in clear, so a slow hash would add nothing.
        self._env_digest = hashlib.sha256(env_password.encode()).digest() if env_password else None
        self._hash = ""
        self._fleet_file = fleet_file
        self._stamp: tuple[int, int, int] | None = None  # the hash file as last read or written
        if self._env_digest is not None:
            return
        self._load()

    def _load(self) -> None:
        self._stamp = self._file_stamp()
        stored = self._read_stored_hash()
        if stored is not None:
            self._hash = stored
        elif (fleet_hash := fleet.read_table(self._fleet_file, "web").admin_password_hash) is not None:
            self._hash = fleet_hash
        else:
            password = generate_password()
            try:
                self._store(generate_password_hash(password))
                kept = "shown only this once; change it on the page"
            except StorageError as exc:
                self._hash = generate_password_hash(password)
                kept = f"valid until the settings page restarts: {exc}"
            log.warning("No admin password was set. Generated one for the settings page: %s "
                        "(%s)", password, kept)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def reload_if_replaced(self) -> bool:
        """Pick up a password set outside this process (`blurcam password reset`, a factory
        reset). True when the password changed, so that every open session ends."""
        if self._env_digest is not None or self._file_stamp() == self._stamp:
            return False  # the common case: one stat, no lock (a login may hold it for a while)
        with self._lock:
            if self._file_stamp() == self._stamp:
                return False
            self._load()
        log.warning("admin password replaced on the device; all sessions end")
        return True

    def _read_stored_hash(self) -> str | None:
        if not self.path.exists():
            return None
        stored = self.path.read_text(errors="replace").strip()
        if stored.startswith(_HASH_PREFIXES):
            return stored
        # A damaged file must not lock the owner out for good: set it aside, start afresh.
        kept = set_aside(self.path, self.path.with_name(PASSWORD_FILE + ".broken"))
        log.error("%s is not a password hash; %s", self.path, kept)
        return None

    def _store(self, new_hash: str) -> None:
        """Save, then use: a hash that could not be saved raises StorageError and is not used."""
        write_atomically(self.path, new_hash.encode() + b"\n", what="password")
        self._stamp = self._file_stamp()
        self._hash = new_hash

    def check(self, password: object) -> bool:
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            return False
        if self._env_digest is not None:
            return hmac.compare_digest(hashlib.sha256(password.encode()).digest(), self._env_digest)
        # scrypt takes 32 MiB and a noticeable time per check: a few at once, never a pile-up.
        with _HASH_CHECKS:
            return check_password_hash(self._hash, password)

    def change(self, current: object, new: object) -> None:
        if self.from_env:
            raise PasswordError("new_password", "the password is set by BLURCAM_ADMIN_PASSWORD "
                                "on this device and cannot be changed here")
        if not isinstance(new, str) or not (MIN_PASSWORD_LENGTH <= len(new) <= MAX_PASSWORD_LENGTH):
            raise PasswordError("new_password", f"must be {MIN_PASSWORD_LENGTH} to "
                                f"{MAX_PASSWORD_LENGTH} characters")
        with self._lock:
            if not self.check(current):
                raise PasswordError("current_password", "wrong password")
            self._store(generate_password_hash(new))
        log.info("admin password changed")


class LoginThrottle:
    """Limits password guesses (logins and password changes) per client address, plus a
    device-wide cap against guessing spread over many addresses.

    Each attempt is counted when it starts, before the slow hash, so a burst of parallel tries
    cannot slip past the limit; a right password then takes its count back. Clients for which
    `trusted(address)` holds (this machine, the computer at the other end of the USB cable) are
    held to their own limit only: guessing from the network never locks the owner out there.
    """

    def __init__(self, per_client: int = 5, overall: int = 30, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 trusted: Callable[[str], bool] = lambda client: False):
        self.per_client, self.overall, self.window_s, self.clock = per_client, overall, window_s, clock
        self.trusted = trusted
        self._attempts: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._all: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def _expire(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_s:
            times.popleft()

    def begin(self, client: str) -> float:
        """Start a guess: 0 (and the guess is counted as failed until `succeeded`), or the seconds
        until `client` may try again."""
        now = self.clock()
        trusted = self.trusted(client)
        with self._lock:
            mine = self._attempts[client]
            self._expire(mine, now)
            self._expire(self._all, now)
            waits = [0.0]
            if len(mine) >= self.per_client:
                waits.append(mine[0] + self.window_s - now)
            if not trusted and len(self._all) >= self.overall:
                waits.append(self._all[0] + self.window_s - now)
            wait = max(waits)
            if wait > 0:
                if not mine:
                    del self._attempts[client]  # keeps the table from growing with every address
                return wait
            mine.append(now)
            if not trusted:
                self._all.append(now)
            return 0.0

    def succeeded(self, client: str) -> None:
        """The guess was right: this client starts afresh and its guess leaves the overall count."""
        with self._lock:
            mine = self._attempts.pop(client, None)
            if mine and mine[-1] in self._all:
                self._all.remove(mine[-1])

    def not_a_guess(self, client: str) -> None:
        """The attempt never reached the password check (e.g. the new password was too short)."""
        with self._lock:
            mine = self._attempts.get(client)
            if mine:
                last = mine.pop()
                if last in self._all:
                    self._all.remove(last)


class SessionRegistry:
    """The login sessions this process issued. The cookie only carries a random id, so logging out
    (or changing the password) really ends a session: a copied cookie does not outlive it."""

    def __init__(self, lifetime_s: float, limit: int = 64, clock: Callable[[], float] = time.monotonic):
        self.lifetime_s, self.limit, self.clock = lifetime_s, limit, clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self) -> str:
        sid = secrets.token_urlsafe(24)
        with self._lock:
            if len(self._expiry) >= self.limit:  # drop the oldest, not the newest login
                del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
            self._expiry[sid] = self.clock() + self.lifetime_s
        return sid

    def is_active(self, sid: object) -> bool:
        if not isinstance(sid, str):  # no session id in the cookie (or a forged non-string)
            return False
        with self._lock:
            expiry = self._expiry.get(sid)
            if expiry is not None and expiry <= self.clock():
                del self._expiry[sid]
                return False
            return expiry is not None

    def end(self, sid: object) -> None:
        if not isinstance(sid, str):
            return
        with self._lock:
            self._expiry.pop(sid, None)

    def end_all(self) -> None:
        with self._lock:
            self._expiry.clear()


def passwords() -> PasswordStore:
    return current_app.extensions["blurcam.passwords"]


def _throttle() -> LoginThrottle:
    return current_app.extensions["blurcam.throttle"]


def _sessions() -> SessionRegistry:
    return current_app.extensions["blurcam.sessions"]


def is_logged_in() -> bool:
    return _sessions().is_active(session.get("sid"))


class LoginOutcome:
    OK, WRONG, THROTTLED = "ok", "wrong", "throttled"


def attempt_login(password: object) -> tuple[str, float]:
    """Check a password, honouring the throttle; on success start a fresh session."""
    client = request.remote_addr or "unknown"
    wait = _throttle().begin(client)
    if wait > 0:
        return LoginOutcome.THROTTLED, wait
    if not passwords().check(password):
        log.warning("failed login from %s", client)
        return LoginOutcome.WRONG, 0.0
    _throttle().succeeded(client)
    start_session()
    return LoginOutcome.OK, 0.0


def attempt_password_change(current: object, new: object) -> tuple[str, float]:
    """Change the password if `current` is right, honouring the same throttle as logins.
    PasswordError for a refused change (a wrong current password is also WRONG)."""
    client = request.remote_addr or "unknown"
    wait = _throttle().begin(client)
    if wait > 0:
        return LoginOutcome.THROTTLED, wait
    try:
        passwords().change(current, new)
    except PasswordError as exc:
        if exc.field == "current_password":
            log.warning("wrong current password in a password change from %s", client)
            return LoginOutcome.WRONG, 0.0
        _throttle().not_a_guess(client)
        raise
    _throttle().succeeded(client)
    return LoginOutcome.OK, 0.0


def start_session() -> str:
    """A new session (never reuse a pre-login one) with a new CSRF token, which is returned."""
    _sessions().end(session.get("sid"))
    session.clear()
    g.pop("csrf_token", None)  # flask-wtf caches the token per request; drop the pre-login one
    session.permanent = True
    session["sid"] = _sessions().create()
    return generate_csrf()


def end_all_sessions() -> None:
    _sessions().end_all()


def end_session() -> None:
    _sessions().end(session.get("sid"))
    session.clear()
    g.pop("csrf_token", None)


def bearer_token_ok() -> bool:
    """Whether the request carries the fleet file's `[web] metrics_token` as a bearer token."""
    token = current_app.extensions["blurcam.metrics_token"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode())


def login_required_everywhere() -> ResponseReturnValue | None:
    """before_request hook: only the login page, its assets and the login API are public;
    TOKEN_ENDPOINTS (/metrics) also take the read-only bearer token."""
    if passwords().reload_if_replaced():
        end_all_sessions()
    if request.endpoint in current_app.config["PUBLIC_ENDPOINTS"] or is_logged_in():
        return None
    if request.endpoint in current_app.config["TOKEN_ENDPOINTS"]:
        if bearer_token_ok():
            return None
        return ("log in, or send Authorization: Bearer with the fleet file's [web] metrics_token\n",
                401, {"WWW-Authenticate": 'Bearer realm="blurcam"', "Content-Type": "text/plain"})
    if request.path.startswith("/api/"):
        return jsonify(error="not logged in", errors={"session": "log in with POST /api/login"}), 401
    return redirect(url_for("auth.login_page", next=request.full_path if request.args else request.path))


bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: an attacker's link must not bounce the user to another one.

    Browsers drop tabs and newlines from URLs and read a backslash as a slash, so '/%09/evil' (a
    tab) is '//evil', another site: anything but printable ASCII, and any backslash, is refused.
    """
    if (target and target.startswith("/") and not target.startswith("//") and target.isascii()
            and target.isprintable() and " " not in target and "\\" not in target):
        return target
    return url_for("views.settings_page")


@bp.get("/login")
def login_page():
    if is_logged_in():
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", next=request.args.get("next", ""))


@bp.post("/login")
def login_form():
    outcome, wait = attempt_login(request.form.get("password", ""))
    if outcome == LoginOutcome.OK:
        return redirect(_safe_next(request.form.get("next")))
    if outcome == LoginOutcome.THROTTLED:
        flash(f"Too many attempts. Try again in {int(wait) + 1} seconds.")
        return render_template("login.html", next=request.form.get("next", "")), 429, \
            {"Retry-After": str(int(wait) + 1)}
    flash("Wrong password.")
    return render_template("login.html", next=request.form.get("next", "")), 401


@bp.post("/logout")
def logout_form():
    end_session()
    flash("You are logged out.")
    return redirect(url_for("auth.login_page"))

