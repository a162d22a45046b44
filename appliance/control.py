"""The local control socket between the web process and the pipeline daemon.

The web process owns no device; it asks the daemon for settings, status and preview frames over a
Unix socket. One message, in either direction, is:

    4 bytes  header length  (big-endian)
    4 bytes  payload length (big-endian)
    header   UTF-8 JSON object
    payload  raw bytes (a JPEG, an uploaded image), possibly empty

A request header is {"op": NAME, "args": {...}}; a reply header is {"ok": true, "result": ...} or
{"ok": false, "error": KIND, "message": TEXT, "errors": {field: reason}}. A connection may carry
many requests in turn. Sizes are capped, and a malformed request gets an error reply: nothing a
client sends can stop the server.

A client that stalls cannot hold the server either: a request, once its first byte has arrived, must
arrive whole within MESSAGE_DEADLINE_S; a connection with no request for IDLE_TIMEOUT_S is closed;
and when every worker is taken, the connection that has been waiting longest for its client is
closed to make room (a real client sends its request at once, so it is never the one waiting).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from appliance import safejson
from appliance.settings import SettingsError
from appliance.storage import StorageError

log = logging.getLogger(__name__)

_PREFIX = struct.Struct(">II")
MAX_HEADER = 64 * 1024
MAX_PAYLOAD = 16 * 1024 * 1024  # above the web upload cap, below anything that could hurt the daemon
MAX_CONNECTIONS = 16  # worker threads, one per connection
IDLE_TIMEOUT_S = 10.0  # a connection with no request in progress
MESSAGE_DEADLINE_S = 2.0  # from a request's first byte to its last
SLOT_WAIT_S = 1.0  # how long a new connection waits for a worker to come free
# The preview's views: the camera, the mask, what the host gets, and those three side by side.
PREVIEW_VIEWS = ("original", "mask", "output", "all")


def check_preview_view(view: object) -> str:
    """The one check of a preview view name (the daemon makes it for every caller)."""
    if not isinstance(view, str) or view not in PREVIEW_VIEWS:
        raise SettingsError({"view": f"one of {', '.join(PREVIEW_VIEWS)}; got {view!r}"})
    return view


class ControlError(RuntimeError):
    """The daemon could not be reached, or could not answer a request."""


class ServiceNotRunning(ControlError):
    """Nobody listens on the control socket: the daemon is not running."""


class ProtocolError(ValueError):
    """A message that breaks the framing rules (too big, not JSON, truncated)."""


def _recv_exact(sock: socket.socket, size: int, deadline: float | None = None) -> bytes:
    """`size` bytes; with a `deadline` (time.monotonic()), TimeoutError once it has passed."""
    chunks = []
    while size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("message not complete before its deadline")
            sock.settimeout(left)
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def send_message(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"message too large (header {len(head)} B, payload {len(payload)} B)")
    sock.sendall(_PREFIX.pack(len(head), len(payload)) + head + payload)


def recv_message(sock: socket.socket, deadline_s: float | None = None) -> tuple[dict[str, Any], bytes]:
    """Read one message. EOFError on a clean close before a message starts.

    The first byte may take as long as the socket's timeout allows; with `deadline_s` the rest of
    the message must follow within that many seconds (TimeoutError otherwise).
    """
    first = _recv_exact(sock, 1)
    deadline = time.monotonic() + deadline_s if deadline_s is not None else None
    try:
        prefix = first + _recv_exact(sock, _PREFIX.size - 1, deadline)
    except EOFError:
        raise ProtocolError("connection closed in the middle of a message") from None
    head_len, payload_len = _PREFIX.unpack(prefix)
    if head_len > MAX_HEADER:
        raise ProtocolError(f"header of {head_len} bytes exceeds the {MAX_HEADER}-byte limit")
    if payload_len > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {payload_len} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    try:
        head = _recv_exact(sock, head_len, deadline)
        payload = _recv_exact(sock, payload_len, deadline)
    except EOFError:
        raise ProtocolError("connection closed in the middle of a message") from None
    try:
        header = safejson.loads(head)
    except safejson.JsonError as exc:
        raise ProtocolError(f"bad header: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    return header, payload


def _text_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise SettingsError({name: f"required, a string; got {type(value).__name__}"})
    return value


class ControlServer:
    """Serves a Controller on a Unix socket, one worker thread per connection."""

    def __init__(self, controller, socket_path: str | os.PathLike, mode: int = 0o660,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, message_deadline_s: float = MESSAGE_DEADLINE_S):
        self.controller = controller
        self.path = Path(socket_path)
        self.mode = mode
        self.idle_timeout_s, self.message_deadline_s = idle_timeout_s, message_deadline_s
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stopping = threading.Event()
        # Connections waiting for (or reading) a request, with the time they started waiting:
        # the ones that may be closed to make room. A connection being answered is not in here.
        self._waiting: dict[socket.socket, float] = {}
        self._waiting_lock = threading.Lock()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        # Group access lets the web process (another user in group blurcam) connect.
        os.chmod(self.path, self.mode)
        listener.listen(MAX_CONNECTIONS)
        self._listener = listener
        self._stopping.clear()
        # The loop gets the listener itself: stop() may set self._listener to None at any time.
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,), name="control-accept",
                                        daemon=True)
        self._thread.start()
        log.info("control socket listening on %s", self.path)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.path.unlink(missing_ok=True)

    def _remove_stale_socket(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # left behind by a daemon that died; nobody listens on it
            return
        finally:
            probe.close()
        raise ControlError(f"another daemon is already listening on {self.path}")

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not self._slots.acquire(blocking=False):
                self._close_longest_waiting()
                if not self._slots.acquire(timeout=SLOT_WAIT_S):
                    self._refuse(conn, "too many connections to the control socket")
                    continue
            threading.Thread(target=self._serve_connection, args=(conn,),
                             name="control-conn", daemon=True).start()

    def _close_longest_waiting(self) -> None:
        """Make room: end the connection that has waited longest for its client to speak."""
        with self._waiting_lock:
            if not self._waiting:
                return  # every worker is answering a request: nobody to drop
            conn = min(self._waiting, key=self._waiting.__getitem__)
            del self._waiting[conn]
            try:
                conn.shutdown(socket.SHUT_RDWR)  # its worker's recv returns; it frees its slot
            except OSError:
                pass
        log.warning("control socket full: closed a connection whose client was not sending")

    @staticmethod
    def _refuse(conn: socket.socket, message: str) -> None:
        try:
            conn.settimeout(1.0)
            send_message(conn, {"ok": False, "error": "busy", "message": message})
        except OSError:
            pass
        conn.close()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                conn.settimeout(self.idle_timeout_s)
                with self._waiting_lock:
                    self._waiting[conn] = time.monotonic()
                try:
                    header, payload = recv_message(conn, self.message_deadline_s)
                except EOFError:
                    return
                except ProtocolError as exc:
                    # After a framing error the stream position is unknown: answer, then hang up.
                    self._reply(conn, {"ok": False, "error": "bad_request", "message": str(exc)})
                    return
                finally:
                    with self._waiting_lock:
                        self._waiting.pop(conn, None)
                conn.settimeout(self.idle_timeout_s)
                reply, body = self._dispatch(header, payload)
                self._reply(conn, reply, body)
        except (OSError, ProtocolError) as exc:  # client went away, stalled or was dropped
            log.debug("control connection ended: %s", exc)
        finally:
            conn.close()
            self._slots.release()

    @staticmethod
    def _reply(conn: socket.socket, reply: dict[str, Any], body: bytes = b"") -> None:
        try:
            send_message(conn, reply, body)
        except ProtocolError as exc:
            # The promised reply always goes out, even when the answer itself cannot.
            log.error("control reply too large: %s", exc)
            send_message(conn, {"ok": False, "error": "internal", "message": f"reply not sent: {exc}"})

    def _dispatch(self, header: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        op, args = header.get("op"), header.get("args", {})
        if not isinstance(args, dict):
            return {"ok": False, "error": "bad_request", "message": "args must be an object"}, b""
        handlers = self._handlers()
        if not isinstance(op, str) or op not in handlers:
            got = repr(op) if isinstance(op, str) else f"a {type(op).__name__}"
            return {"ok": False, "error": "bad_request",
                    "message": f"op must be one of {', '.join(handlers)}; got {got}"}, b""
        handler = handlers[op]
        try:
            return handler(args, payload)
        except SettingsError as exc:
            return {"ok": False, "error": "settings", "message": str(exc), "errors": exc.errors}, b""
        except StorageError as exc:  # nothing was saved or changed; the message says why
            return {"ok": False, "error": "storage", "message": str(exc), "what": exc.what,
                    "reason": exc.reason, "errno": exc.errno}, b""
        except Exception as exc:  # a failing request must not take the daemon down
            log.exception("control request %r failed", op)
            return {"ok": False, "error": "internal", "message": f"{type(exc).__name__}: {exc}"}, b""

    def _handlers(self):
        c = self.controller

        def ok(result: Any = None, body: bytes = b"") -> tuple[dict[str, Any], bytes]:
            return {"ok": True, "result": result}, body

        def preview(args, _payload):
            view, after = args.get("view"), args.get("after", 0)
            if type(after) is not int or not 0 <= after < 2**63:
                raise SettingsError({"after": f"a frame number (integer >= 0); got {after!r}"})
            seq, jpeg = c.preview_next(view, after)
            return ok({"view": view, "seq": seq}, jpeg)

        def update_settings(args, _payload):
            changes = args.get("changes")
            if not isinstance(changes, dict):
                raise SettingsError({"settings": "expected an object of setting names to values "
                                                 f"in args.changes; got {type(changes).__name__}"})
            return ok(c.update_settings(changes).model_dump())

        return {
            "ping": lambda a, p: ok("pong"),
            "get_settings": lambda a, p: ok(c.settings.current.model_dump()),
            "update_settings": update_settings,
            "status": lambda a, p: ok(c.status()),
            "preview": preview,
            "set_background": lambda a, p: ok(c.set_background(p).model_dump()),
            "factory_reset": lambda a, p: ok(c.factory_reset().model_dump()),
            "reset_settings": lambda a, p: ok(c.settings.reset().model_dump()),
            "backgrounds": lambda a, p: ok(c.backgrounds()),
            "background_thumbnail": lambda a, p: ok(None, c.background_thumbnail(_text_arg(a, "name"))),
        }


class ControlClient:
    """Talks to the daemon. One short connection per call, so it is safe from many threads."""

    def __init__(self, socket_path: str | os.PathLike, timeout: float = 5.0):
        self.path = Path(socket_path)
        self.timeout = timeout

    def call(self, op: str, args: dict[str, Any] | None = None,
             payload: bytes = b"") -> tuple[Any, bytes]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise ServiceNotRunning(f"camera service not running (no answer on {self.path}: "
                                        f"{exc.strerror})") from None
            except PermissionError:
                raise ControlError(f"no permission to open {self.path} "
                                   "(is this user in group blurcam?)") from None
            try:
                try:
                    send_message(sock, {"op": op, "args": args or {}}, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a server that refused us (busy) has left its reason to read
                header, body = recv_message(sock)
            except TimeoutError:
                raise ControlError(f"camera service did not answer {op!r} within "
                                   f"{self.timeout:g} s") from None
            except (EOFError, ConnectionError) as exc:
                raise ControlError(f"camera service closed the connection during {op!r} "
                                   f"({exc or 'end of stream'})") from None
        finally:
            sock.close()
        if header.get("ok"):
            return header.get("result"), body
        if header.get("error") == "settings":
            raise SettingsError(dict(header.get("errors") or {}))
        if header.get("error") == "storage":
            raise StorageError.from_reply(header)
        raise ControlError(header.get("message") or f"daemon refused {op!r}")

    def ping(self) -> bool:
        return self.call("ping")[0] == "pong"

    def get_settings(self) -> dict[str, Any]:
        return self.call("get_settings")[0]

    def update_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial change; SettingsError names each bad field as the daemon judged it."""
        return self.call("update_settings", {"changes": changes})[0]

    def status(self) -> dict[str, Any]:
        return self.call("status")[0]

    def preview(self, view: str) -> bytes:
        """A JPEG of the newest frame: 'original', 'mask', 'output' or 'all' (side by side)."""
        return self.call("preview", {"view": view})[1]

    def preview_next(self, view: str, after: int) -> tuple[int, bytes]:
        """(sequence number, JPEG) of the first frame newer than `after`; the same number as
        `after` when none came within the daemon's wait (a stream then sends nothing)."""
        result, jpeg = self.call("preview", {"view": view, "after": after})
        return int(result["seq"]), jpeg

    def set_background(self, image: bytes) -> dict[str, Any]:
        return self.call("set_background", payload=image)[0]

    def factory_reset(self) -> dict[str, Any]:
        """Forget the user's settings and backgrounds; returns the settings now in force."""
        return self.call("factory_reset")[0]

    def reset_settings(self) -> dict[str, Any]:
        """Forget every change the user made: back to the fleet's (or the built-in) defaults."""
        return self.call("reset_settings")[0]

    def backgrounds(self) -> dict[str, Any]:
        """{"current": name, "choices": [{"name", "label", "kind": "builtin"|"uploaded"}]}"""
        return self.call("backgrounds")[0]

    def background_thumbnail(self, name: str) -> bytes:
        return self.call("background_thumbnail", {"name": name})[1]
