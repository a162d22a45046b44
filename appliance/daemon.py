"""The appliance daemon: owns the camera, the model, the settings and the USB gadget's userspace.

Nothing runs while nobody watches: the camera and the model start when a host commits a stream
(or the settings page asks for a preview) and stop again afterwards.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import __version__, controls
from appliance.background_store import BackgroundStore
from appliance.fleet import FleetError
from appliance.health import Health, status_line
from appliance.pipeline import FramePipeline
from appliance.preview import WAIT as PREVIEW_WAIT
from appliance.preview import Previews
from appliance.settings import Settings, SettingsError, SettingsStore, image_controls, merge
from appliance.sources.base import Source
from appliance.stream import FrameSlot, StreamFormat
from appliance.supervisor import Supervisor

if TYPE_CHECKING:
    from appliance.uvc import UvcServer

log = logging.getLogger(__name__)

HEARTBEAT_STALE = 5.0  # a worker silent this long is hung (shorter when systemd's watchdog is)
SHUTDOWN_GRACE = 1.5  # after SIGTERM, a clean stop taking longer than this is cut short


class Controller:
    """The daemon's front, called by the control socket and the UVC server (as a UvcBackend).

    Each job has its own part: the supervisor runs the pipeline while someone wants frames and
    restarts it when it fails; the background store keeps the uploaded pictures; previews
    renders the page's pictures; health measures the machine. This class joins them to the
    settings and answers the callers."""

    def __init__(self, state_dir: Path, fleet_file: Path | None = None, source_spec: str = "auto",
                 fault: str = ""):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings = SettingsStore(self.state_dir, fleet_file)
        self.source_spec = source_spec
        self.background_store = BackgroundStore(self.state_dir, self.settings)
        self.pipeline = FramePipeline(self.settings.current, self.background_store.picture(self.settings.current))
        self.supervisor = Supervisor(self._open_source, self.pipeline, fault)
        self.previews = Previews(self.supervisor, lambda: self.settings.current.effect)
        self._health = Health()
        self._host_connected = False
        self._usb: UvcServer | None = None  # serving the USB gadget, when this machine has one
        self._started = time.monotonic()
        self.settings.subscribe(self._on_settings_changed)

    def _open_source(self) -> Source:
        from appliance.sources import open_source
        source = open_source(self.source_spec)
        source.set_controls(image_controls(self.settings.current))
        return source

    # --- settings -------------------------------------------------------------------------
    def _on_settings_changed(self, old: Settings, new: Settings) -> None:
        changed = old.background != new.background
        self.pipeline.configure(new, self.background_store.picture(new) if changed else None, changed)
        source = self.supervisor.source
        if source is not None:
            source.set_controls(image_controls(new))
        log.info("settings changed: %s", ", ".join(k for k in Settings.model_fields if getattr(old, k) != getattr(new, k)))

    def update_settings(self, changes: dict) -> Settings:
        """Check everything first and name every bad field at once (API.md): the schema, the
        model files a model/precision change would load, an upload's name. Nothing is saved
        unless all of it is right."""
        errors: dict[str, str] = {}
        for check in (lambda: merge(self.settings.current, changes),
                      lambda: self._check_model_files(changes),
                      lambda: self.background_store.check_choice(changes.get("background"))):
            try:
                check()
            except SettingsError as exc:
                errors.update({k: v for k, v in exc.errors.items() if k not in errors})
        if errors:
            raise SettingsError(errors)
        return self.settings.update(changes)

    def _check_model_files(self, changes: dict) -> None:
        """Load the model files a change would pick before accepting it: a broken file must not
        be saved as the choice. The error names the field(s) of the request that picked it."""
        picked = [f for f in ("model", "precision") if f in changes]
        if not picked:
            return
        from appliance.segment import ModelError, check_models
        current = self.settings.current
        try:  # unknown names are the schema's to report (check_models leaves them alone)
            check_models(changes.get("model", current.model), changes.get("precision", current.precision))
        except ModelError as exc:
            raise SettingsError(dict.fromkeys(picked, str(exc))) from None

    def set_background(self, data: bytes) -> Settings:
        return self.background_store.upload(data)

    def backgrounds(self) -> dict:
        return self.background_store.choices()

    def background_thumbnail(self, name: str) -> bytes:
        return self.background_store.thumbnail(name)

    def factory_reset(self) -> Settings:
        """Forget the user's settings and uploaded backgrounds (fleet defaults apply again)."""
        new = self.settings.reset()
        self.background_store.remove_uploads(keep=new.background)
        log.warning("factory reset: user settings and uploaded backgrounds removed")
        return new

    # --- what the UVC server needs (appliance/uvc/backend.py) -----------------------------
    def start_stream(self, fmt: StreamFormat) -> FrameSlot:
        """Returns at once; the supervisor starts the pipeline (see Supervisor.start_stream)."""
        return self.supervisor.start_stream(fmt)

    def stop_stream(self) -> None:
        """Returns at once, without waiting for the pipeline to stop."""
        self.supervisor.stop_stream()

    def set_host_state(self, connected: bool, streaming: StreamFormat | None) -> None:
        if connected != self._host_connected:
            log.info("USB host %s", "connected" if connected else "gone")
        self._host_connected = connected

    def image_controls(self) -> dict[str, int]:
        return image_controls(self.settings.current)

    def set_image_controls(self, changes: dict[str, int]) -> None:
        unknown = sorted(set(changes) - set(controls.NAMES))
        if unknown:
            raise SettingsError({name: "not an image control" for name in unknown})
        self.update_settings(changes)

    # --- USB ------------------------------------------------------------------------------
    def start_usb(self) -> bool:
        """Serve the UVC gadget when this machine has one bound to a UDC; False when not."""
        try:
            from appliance.uvc import UvcServer, find_uvc_node
        except ImportError:
            return False
        node = find_uvc_node()
        if not node:
            log.info("no UVC gadget video node: not serving USB (run `blurcam gadget up` on a device with a UDC)")
            return False
        server = UvcServer(self, node)
        try:
            server.start()
        except (OSError, RuntimeError, ValueError) as exc:
            # A broken gadget must not take the settings page (and the way to fix it) down too.
            log.error("cannot serve the UVC gadget at %s: %s", node, exc)
            return False
        self._usb = server
        log.info("UVC userspace serving %s", node)
        return True

    # --- preview, health, status ----------------------------------------------------------
    def preview(self, view: str = "output") -> bytes:
        """A JPEG of the newest frame."""
        return self.previews.next(view, 0)[1]

    def preview_next(self, view: str, after: int, wait: float = PREVIEW_WAIT) -> tuple[int, bytes]:
        return self.previews.next(view, after, wait)

    def healthy(self, stale_after: float = HEARTBEAT_STALE) -> bool:
        """True while the supervisor and every running worker showed signs of life lately."""
        return self.supervisor.healthy(stale_after)

    def status(self) -> dict:
        s = self.settings.current
        source = self.supervisor.source
        out = self.supervisor.status()
        out.update({
            "source": self.supervisor.source_name or self.source_spec,
            # The image controls the camera applies itself; None until it has been opened.
            "camera_controls": (sorted(getattr(source, "hardware_controls", ()))
                                if source is not None else None),
            "stream_format": str(self.supervisor.stream_format) if self.supervisor.stream_format else None,
            "host_connected": self._host_connected,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "version": __version__,
            "model": s.model,
            "precision": s.precision,
            "effect": s.effect,
            "controls": image_controls(s),
        })
        out.update(self._health.status())
        if self._usb is not None:
            out["usb"] = self._usb.status()
        return out

    def status_line(self) -> str:
        """One short line for systemd's STATUS=."""
        return status_line(self.status())

    def close(self) -> None:
        if self._usb is not None:
            self._usb.stop()
            self._usb = None
        self.supervisor.close()


def default_control_socket(state_dir: Path | None) -> Path:
    return Path(state_dir) / "control.sock" if state_dir else Path("/run/blurcam/control.sock")


def run_daemon(source: str, state_dir: Path, fleet_file: Path | None, control_socket: Path,
               web_listen: str | None = None) -> int:
    """`blurcam run`: serve until SIGTERM/SIGINT. Returns the exit code."""
    from appliance.control import ControlError, ControlServer
    from appliance.service import Notifier

    notifier = Notifier()
    stop = threading.Event()

    def on_signal(*_):
        stop.set()
        # A hung camera driver must not keep the service from stopping: cut a slow stop short.
        timer = threading.Timer(SHUTDOWN_GRACE, _force_exit)
        timer.daemon = True  # gone with the process when the clean stop finishes in time
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    if web_listen:  # a taken port ends the start in one line, before the camera or a password
        from web.server import check_listen
        try:
            check_listen(web_listen)
        except (ValueError, OSError) as exc:
            log.error("cannot start: %s", exc)
            return 2
    try:
        controller = Controller(state_dir, fleet_file, source, fault=os.environ.get("BLURCAM_FAULT", ""))
        _ = controller.pipeline.segmenter  # load the model now: a broken model fails the start, loudly
    except (SettingsError, FleetError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    except Exception as exc:
        from appliance.segment import ModelError
        if isinstance(exc, ModelError):
            log.error("cannot start: %s", exc)
            return 2
        raise
    control = ControlServer(controller, control_socket)
    try:
        control.start()
    except (ControlError, OSError) as exc:  # e.g. another daemon already owns the socket
        log.error("cannot start: %s", exc)
        controller.close()
        return 2
    controller.start_usb()
    web = _start_web(web_listen, control_socket, state_dir) if web_listen else None

    notifier.ready()
    notifier.status(controller.status_line())
    log.info("blurcam %s ready (source %s, state %s, control %s)", __version__, source, state_dir, control_socket)
    interval = notifier.watchdog_interval()
    ping_every = interval / 2 if interval else 1.0
    stale_after = min(HEARTBEAT_STALE, max(1.0, ping_every))
    last_status = last_ping = 0.0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if controller.healthy(stale_after) and now - last_ping >= ping_every:
                notifier.watchdog()
                last_ping = now
            if now - last_status >= 5.0:
                notifier.status(controller.status_line())
                last_status = now
            if web is not None and web.poll() is not None:
                log.error("web process exited with %s", web.returncode)
                web = None
            stop.wait(min(0.5, ping_every))
    finally:
        notifier.stopping()
        log.info("shutting down")
        if web is not None:
            web.terminate()
        controller.close()
        control.stop()
        if web is not None:
            try:
                web.wait(2)
            except Exception:
                web.kill()
    return _leave(0)


def _leave(code: int) -> int:
    """`code`, or the end of the process with it now when a pipeline worker outlived the clean
    stop (on a slow CPU a frame can still be inside the model). Python ends such a daemon thread
    with pthread_exit() when it comes back from native code during interpreter shutdown; unwinding
    the model runtime's noexcept frames then aborts the process (SIGABRT, "terminate called
    without an active exception"), a crash for systemd. Everything is saved and closed here."""
    if any(t.is_alive() and t.name.startswith("blurcam-") for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _force_exit() -> None:
    log.error("clean shutdown took longer than %.1f s; exiting now", SHUTDOWN_GRACE)
    logging.shutdown()
    os._exit(1)


def _start_web(listen: str, control_socket: Path, state_dir: Path):
    import subprocess
    import sys

    from appliance.lifetime import child_environment
    cmd = [sys.executable, "-m", "appliance", "web", "--listen", listen,
           "--control-socket", str(control_socket), "--state-dir", str(state_dir)]
    log.info("starting the settings page on http://%s/", listen)
    # The page ends with the daemon, even a SIGKILLed one, instead of keeping the port.
    return subprocess.Popen(cmd, env=child_environment())
