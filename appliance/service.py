"""Talking to systemd: readiness/watchdog notifications and logging to the journal.

Both work with or without systemd-python (python3-systemd on the device): the notification
protocol is one datagram on an AF_UNIX socket, and the journal reads levels from "<N>" line
prefixes on stderr. Outside systemd (no NOTIFY_SOCKET, no JOURNAL_STREAM) everything here is a
quiet no-op or plain stderr logging, so `blurcam run` behaves the same on a laptop.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping

try:  # libsystemd's own sd_notify / journal API when the binding is installed
    import systemd.daemon as _sd_daemon
    import systemd.journal as _sd_journal
except ImportError:
    _sd_daemon = None
    _sd_journal = None

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify(3) messages to the service manager named by $NOTIFY_SOCKET.

    Safe to call from any thread. Without $NOTIFY_SOCKET every call does nothing, and a failed
    send is logged once and never raised: a daemon must not die because its supervisor went away.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, use_libsystemd: bool | None = None):
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        # libsystemd reads the socket from the process environment, so it is only usable when the
        # caller did not hand us a different environment.
        if use_libsystemd is None:
            use_libsystemd = _sd_daemon is not None and environ is None
        if use_libsystemd and _sd_daemon is None:
            raise RuntimeError("use_libsystemd=True but systemd-python is not installed")
        self.uses_libsystemd = use_libsystemd
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def ready(self) -> None:
        """The service can do its job now (systemd leaves 'activating' and starts dependents)."""
        self.send("READY=1")

    def status(self, text: str) -> None:
        """One line shown by `systemctl status` ("streaming 1280x720 MJPEG, 29.8 fps")."""
        self.send("STATUS=" + " ".join(text.split()))

    def watchdog(self) -> None:
        """I am alive and working; call at least every watchdog_interval()/2 seconds."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun (systemd shows 'deactivating' instead of guessing)."""
        self.send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds after which systemd kills us without a ping, or None when no watchdog is set."""
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid.strip() != str(os.getpid()):
            return None  # the watchdog belongs to another process (we were forked or exec'd by it)
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not a whole number of microseconds", self._watchdog_usec)
            return None
        return usec / 1_000_000 if usec > 0 else None

    def send(self, message: str) -> bool:
        """Sends one notification ("KEY=value" lines); True when the manager received it."""
        if self.socket_path is None:
            return False
        try:
            if self.uses_libsystemd:
                return bool(_sd_daemon.notify(message))
            self._send_datagram(message.encode())
            return True
        except OSError as error:
            if not self._warned:  # once: the socket stays gone, a line per ping would flood the log
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.socket_path, error)
            return False

    def _send_datagram(self, payload: bytes) -> None:
        address = self.socket_path
        assert address is not None  # only called when enabled
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        with self._lock:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(payload, address)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


# syslog priorities, as journald reads them from a "<N>" prefix on each stderr line
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    for threshold in sorted(_SYSLOG_PRIORITY, reverse=True):
        if levelno >= threshold:
            return _SYSLOG_PRIORITY[threshold]
    return 7


class OneLineFormatter(logging.Formatter):
    """One event, one line: tracebacks and multi-line messages are folded with ' | '."""

    def __init__(self, fmt: str, with_priority_prefix: bool = False):
        super().__init__(fmt, datefmt="%Y-%m-%d %H:%M:%S")
        self.with_priority_prefix = with_priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        text = " | ".join(line for line in super().format(record).splitlines() if line.strip())
        if self.with_priority_prefix:
            text = f"<{syslog_priority(record.levelno)}>{text}"
        return text


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """True when systemd connected our stderr to the journal ($JOURNAL_STREAM names its inode)."""
    env = os.environ if environ is None else environ
    device_inode = env.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in device_inode.split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


_HANDLER_MARK = "_blurcam_handler"


def parse_level(level: int | str) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"log level {level!r} is not one of debug, info, warning, error, critical")
    return value


def setup_logging(level: int | str = "info", environ: Mapping[str, str] | None = None,
                  use_journal_handler: bool | None = None) -> logging.Handler:
    """Routes the root logger to the journal (with levels) under systemd, else to stderr.

    Under systemd: systemd-python's JournalHandler when installed, otherwise stderr lines with a
    "<N>" priority prefix (journald stores the level and the time itself). Elsewhere: stderr with
    a timestamp. Calling it again replaces the handler it installed before.
    """
    levelno = parse_level(level)
    under_journal = stderr_is_journal(environ)
    if use_journal_handler is None:
        use_journal_handler = under_journal and _sd_journal is not None
    if use_journal_handler:
        if _sd_journal is None:
            raise RuntimeError("use_journal_handler=True but systemd-python is not installed")
        handler: logging.Handler = _sd_journal.JournalHandler(SYSLOG_IDENTIFIER="blurcam")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    elif under_journal:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter("%(name)s: %(message)s", with_priority_prefix=True))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    return handler
