"""The appliance daemon: owns the camera, the model, the settings and the USB gadget's userspace.

Nothing runs while nobody watches: the camera and the model start when a host commits a stream
(or the settings page asks for a preview) and stop again afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import simplejpeg

from appliance import __version__, backgrounds, controls, preview
from appliance.cpuload import CpuMeter
from appliance.frame import fit_cover
from appliance.pipeline import IDLE_STATUS, FramePipeline, ThreadedPipeline
from appliance.settings import Settings, SettingsError, SettingsStore, image_controls
from appliance.sources.base import SourceError
from appliance.sources.file import decode_image, read_image
from appliance.storage import StorageError, remove_stale_temp_files, write_atomically
from appliance.stream import FrameSlot, StreamFormat

if TYPE_CHECKING:
    from appliance.uvc import UvcServer

log = logging.getLogger(__name__)

# 30 fps: the page's preview stream should look like video (it runs only while a page watches).
PREVIEW_FORMAT = StreamFormat("mjpeg", 640, 360, 30)
PREVIEW_SECONDS = 10.0  # a preview keeps the pipeline alive this long after the last request
PREVIEW_WAIT = 2.0  # how long a preview request waits for a newer frame
NO_MASK_REASONS = {"none": "No mask: the effect is Off", "privacy": "No mask: the privacy card is on"}
BACKGROUND_MAX = (1920, 1080)
BACKGROUND_FILES = "background-*.jpg"  # the names set_background gives uploaded pictures
THUMBNAIL_SIZE = (224, 126)
HEARTBEAT_STALE = 5.0  # a worker silent this long is hung (shorter when systemd's watchdog is)
SHUTDOWN_GRACE = 1.5  # after SIGTERM, a clean stop taking longer than this is cut short


def remove_backgrounds(state_dir: Path, keep: str = "") -> list[str]:
    """Delete the uploaded background pictures (factory reset), except `keep` (a fleet default
    may name one). Returns the names removed."""
    removed = []
    for picture in (Path(state_dir) / "backgrounds").glob(BACKGROUND_FILES):
        if picture.name != keep and picture.is_file() and not picture.is_symlink():
            picture.unlink()
            removed.append(picture.name)
    return removed


def system_health() -> dict:
    """CPU load, SoC temperature and (on a Pi) the firmware's throttling flags."""
    out: dict = {"cpu_load": list(os.getloadavg()), "temperature_c": None, "throttled": None}
    try:
        out["temperature_c"] = int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000
    except (OSError, ValueError):
        pass
    for p in ("/sys/devices/platform/soc/soc:firmware/get_throttled",
              "/sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon/get_throttled"):
        try:
            bits = int(Path(p).read_text(), 16)
        except (OSError, ValueError):
            continue
        out["throttled"] = {"under_voltage": bool(bits & 0x1), "freq_capped": bool(bits & 0x2),
                            "throttled": bool(bits & 0x4), "soft_temp_limit": bool(bits & 0x8),
                            "under_voltage_since_boot": bool(bits & 0x10000),
                            "throttled_since_boot": bool(bits & 0x40000)}
        break
    return out


class Controller:
    """The daemon's brain, shared by the UVC userspace and the control socket."""

    def __init__(self, state_dir: Path, fleet_file: Path | None = None, source_spec: str = "auto",
                 fault: str = ""):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings = SettingsStore(self.state_dir, fleet_file)
        remove_stale_temp_files(self.state_dir / "backgrounds", (BACKGROUND_FILES,))
        self.source_spec = source_spec
        self.fault = fault
        self._lock = threading.RLock()
        self._source = None
        self._runner: ThreadedPipeline | None = None
        self._slot: FrameSlot | None = None
        self._mode = "idle"
        self._preview_until = 0.0
        self._host_connected = False
        self._stream_format: StreamFormat | None = None
        self._started = time.monotonic()
        self._preview_lock = threading.Lock()
        self._preview_cache: dict[str, tuple[object, bytes]] = {}
        self._thumbnails: dict[tuple[str, int], bytes] = {}
        self._cpu = CpuMeter()
        self._last_error = ""
        self._restart_mode, self._restart_at, self._restart_delay = "", 0.0, 0.0
        self._usb: UvcServer | None = None  # serving the USB gadget, when this machine has one
        self.pipeline = FramePipeline(self.settings.current, self._load_background(self.settings.current))
        self.settings.subscribe(self._on_settings_changed)

    # --- settings -------------------------------------------------------------------------
    @property
    def _upload_dir(self) -> Path:
        return self.state_dir / "backgrounds"

    def _load_background(self, s: Settings) -> np.ndarray | None:
        path = backgrounds.path_of(s.background, self._upload_dir)
        try:
            return read_image(path)
        except SourceError as exc:
            log.error("background %s unusable (%s); blurring instead", path, exc)
            return None

    def _on_settings_changed(self, old: Settings, new: Settings) -> None:
        changed = old.background != new.background
        self.pipeline.configure(new, self._load_background(new) if changed else None, changed)
        if self._source is not None:
            self._source.set_controls(image_controls(new))
        log.info("settings changed: %s", ", ".join(k for k in Settings.model_fields if getattr(old, k) != getattr(new, k)))

    def update_settings(self, changes: dict) -> Settings:
        if "model" in changes or "precision" in changes:
            # Load the new model before accepting: a broken model file must not be saved as the choice.
            from appliance.segment import ModelError, check_models
            candidate = {**self.settings.current.model_dump(), **changes}
            try:
                check_models(candidate.get("model"), candidate.get("precision"))
            except ModelError as exc:
                raise SettingsError({"model": str(exc)}) from None
        name = changes.get("background")
        if isinstance(name, str) and backgrounds.is_upload(name) and not (self._upload_dir / name).is_file():
            # Only a picture the daemon stored (POST /api/background) can be the background.
            raise SettingsError({"background": f"{name!r} is not a stored background; upload the "
                                               "picture with POST /api/background"})
        return self.settings.update(changes)

    def set_background(self, data: bytes) -> Settings:
        try:
            rgb = decode_image(data, "background upload", fit=BACKGROUND_MAX)
        except SourceError as exc:
            raise SettingsError({"background": str(exc)}) from None
        h, w = rgb.shape[:2]
        scale = min(1.0, BACKGROUND_MAX[0] / w, BACKGROUND_MAX[1] / h)
        if scale < 1.0:
            rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=90, colorspace="RGB")
        name = f"background-{hashlib.sha256(jpeg).hexdigest()[:12]}.jpg"
        old = self.settings.current.background
        write_atomically(self._upload_dir / name, jpeg, what="background picture")
        try:
            new = self.settings.update({"background": name})
        except StorageError:
            if name != old:  # not saved as the choice: do not leave the picture behind
                (self._upload_dir / name).unlink(missing_ok=True)
            raise
        remove_backgrounds(self.state_dir, keep=name)  # one upload is kept: the newest
        return new

    def factory_reset(self) -> Settings:
        """Forget the user's settings and uploaded backgrounds (fleet defaults apply again)."""
        new = self.settings.reset()
        remove_backgrounds(self.state_dir, keep=new.background)
        log.warning("factory reset: user settings and uploaded backgrounds removed")
        return new

    def _uploads(self) -> list[str]:
        if not self._upload_dir.is_dir():
            return []
        return sorted(p.name for p in self._upload_dir.iterdir() if backgrounds.is_upload(p.name))

    def backgrounds(self) -> dict:
        """The pictures "Replace" can use, and the one in effect ("" is the default built-in)."""
        choices = [{"name": name, "label": label, "kind": "builtin"} for name, label in backgrounds.BUILTIN.items()]
        choices += [{"name": name, "label": backgrounds.label_of(name), "kind": "uploaded"}
                    for name in self._uploads()]
        return {"current": self.settings.current.background or backgrounds.DEFAULT, "choices": choices}

    def background_thumbnail(self, name: str) -> bytes:
        """A small JPEG of a background (for the page's picker)."""
        try:
            path = backgrounds.path_of(name, self._upload_dir)
        except ValueError as exc:
            raise SettingsError({"name": str(exc)}) from None
        key = (str(path), path.stat().st_mtime_ns if path.exists() else 0)
        if key not in self._thumbnails:
            try:
                rgb = read_image(path)
            except SourceError as exc:
                raise SettingsError({"name": f"{name}: {exc}"}) from None
            small = fit_cover(rgb, *THUMBNAIL_SIZE)
            self._thumbnails = {key: simplejpeg.encode_jpeg(np.ascontiguousarray(small), quality=80,
                                                            colorspace="RGB"), **self._thumbnails}
            while len(self._thumbnails) > 16:
                self._thumbnails.pop(next(reversed(self._thumbnails)))
        return self._thumbnails[key]

    # --- streaming ------------------------------------------------------------------------
    def _open_source(self):
        if self._source is None:
            from appliance.sources import open_source
            self._source = open_source(self.source_spec)
            s = self.settings.current
            self._source.set_controls(image_controls(s))
        return self._source

    def _run(self, fmt: StreamFormat, mode: str) -> FrameSlot:
        """(Re)start the pipeline for `fmt`. Caller holds the lock."""
        self._halt()
        slot = FrameSlot()
        runner = ThreadedPipeline(self._open_source(), fmt, self.pipeline, slot, fault=self.fault)
        try:
            runner.start()
        except SourceError as exc:
            self._last_error = str(exc)
            self._restart_delay = min(30.0, max(1.0, self._restart_delay * 2))
            self._restart_at = time.monotonic() + self._restart_delay
            self._source = None
            raise
        self._runner, self._slot, self._mode = runner, slot, mode
        self._last_error = ""
        log.info("pipeline started: %s for %s (source %s)", fmt, mode, self._source.name)
        return slot

    def _halt(self) -> None:
        if self._runner is not None:
            self._runner.stop()
            log.info("pipeline stopped after %d frames", self._runner.frames_out)
            self._runner = None
        if self._slot is not None:
            self._slot.close()
            self._slot = None
        self._mode = "idle"

    def start_stream(self, fmt: StreamFormat) -> FrameSlot:
        with self._lock:
            self._stream_format = fmt
            return self._run(fmt, "streaming")

    def stop_stream(self) -> None:
        with self._lock:
            self._stream_format = None
            if self._mode == "streaming":
                self._halt()

    def set_host_state(self, connected: bool, streaming: StreamFormat | None) -> None:
        self._host_connected = connected
        if streaming is not None:
            self._stream_format = streaming

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

    # --- preview --------------------------------------------------------------------------
    def preview(self, view: str = "output") -> bytes:
        """A JPEG of the newest frame."""
        return self.preview_next(view, 0)[1]

    def preview_next(self, view: str, after: int, wait: float = PREVIEW_WAIT) -> tuple[int, bytes]:
        """The first frame newer than sequence number `after` (waiting up to `wait` s), as
        (sequence, JPEG of `view`). With nothing newer in time, the newest frame again with the
        same number: a streaming client sends a frame only when the number moves on."""
        if view not in preview.VIEWS:
            raise ValueError(f"unknown preview view {view!r}: expected {', '.join(preview.VIEWS)}")
        with self._lock:
            self._preview_until = time.monotonic() + PREVIEW_SECONDS
            if self._mode == "idle":
                wait_s = self._restart_at - time.monotonic()
                if wait_s > 0:  # the camera just failed: do not hammer it from every page refresh
                    raise SourceError(f"camera unavailable ({self._last_error}); retrying in {wait_s:.0f} s")
                self._run(PREVIEW_FORMAT, "preview")
            runner, slot = self._runner, self._slot
        newest, _ = slot.latest()
        if after > newest:
            after = 0  # a number from before a restart of the pipeline
        deadline = time.monotonic() + wait
        got = slot.get(after, timeout=wait)
        if got is None and after:
            got = slot.get(0, timeout=max(0.0, deadline - time.monotonic()))
        latest = runner.latest
        if got is None or latest is None:
            raise SourceError(f"no frame from the camera ({runner.error or 'timed out'})")
        return got[0], self._preview_jpeg(latest, view)

    def _preview_jpeg(self, latest, view: str) -> bytes:
        """Encode once per frame and view, however many pages watch it."""
        with self._preview_lock:
            cached = self._preview_cache.get(view)
            if cached is not None and cached[0] is latest:
                return cached[1]
        effect = self.settings.current.effect
        jpeg = preview.render(latest, view, NO_MASK_REASONS.get(effect, ""))
        with self._preview_lock:
            self._preview_cache[view] = (latest, jpeg)
        return jpeg

    # --- health ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Housekeeping from the main loop: end idle previews, recover from a failed pipeline."""
        with self._lock:
            if self._mode == "preview" and time.monotonic() > self._preview_until:
                self._halt()
            runner = self._runner
            if runner is not None and runner.error is not None:
                self._last_error = str(runner.error)
                self._restart_mode = self._mode
                self._halt()
                self._source = None  # reopen the device from scratch
                # Back off: a camera that keeps failing is retried ever more slowly (1 s .. 30 s).
                self._restart_delay = min(30.0, max(1.0, self._restart_delay * 2))
                self._restart_at = time.monotonic() + self._restart_delay
                log.error("pipeline failed (%s); retrying in %.0f s", self._last_error, self._restart_delay)
            if (self._restart_mode == "streaming" and self._runner is None
                    and self._stream_format is not None and time.monotonic() >= self._restart_at):
                self._restart_mode = ""
                try:
                    self._run(self._stream_format, "streaming")
                except (SourceError, OSError) as exc:
                    self._last_error = str(exc)
                    self._restart_mode = "streaming"
                    self._restart_delay = min(30.0, self._restart_delay * 2)
                    self._restart_at = time.monotonic() + self._restart_delay
                    log.error("cannot restart the pipeline: %s; retrying in %.0f s", exc, self._restart_delay)
            elif self._runner is not None and self._runner.frames_out > 0:
                self._restart_delay = 0.0  # healthy again

    def healthy(self, stale_after: float = HEARTBEAT_STALE) -> bool:
        """True while every running worker has shown signs of life within `stale_after` s."""
        runner = self._runner
        if runner is None:
            return True
        now = time.monotonic()
        return all(now - beat < stale_after for beat in runner.heartbeat.values())

    def status(self) -> dict:
        s = self.settings.current
        runner = self._runner
        out = {
            "state": self._mode,
            "fps": round(runner.current_fps(), 1) if runner else 0.0,
            "inference_ms": round(runner.inference_ms, 2) if runner else None,
            "frame_ms": round(runner.frame_ms, 2) if runner else None,
            "latency_ms": round(runner.latency_ms, 1) if runner else None,
            "source": self._source.name if self._source else self.source_spec,
            # The image controls the camera applies itself; None until it has been opened.
            "camera_controls": (sorted(getattr(self._source, "hardware_controls", ()))
                                if self._source is not None else None),
            "stream_format": str(self._stream_format) if self._stream_format else None,
            "host_connected": self._host_connected,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "version": __version__,
            "model": s.model,
            "precision": s.precision,
            "effect": s.effect,
            "controls": image_controls(s),
            "error": self._last_error or None,
        }
        # Live figures: capture-to-output latency, the applied mask's age, frames dropped.
        out.update(runner.stats().as_status() if runner else IDLE_STATUS)
        out.update(system_health())
        out["cpu_percent"] = self._cpu.percent()  # all cores together, since the last status
        if self._usb is not None:
            out["usb"] = self._usb.status()
        return out

    def status_line(self) -> str:
        """One short line for systemd's STATUS=."""
        st = self.status()
        if st["state"] == "idle":
            return f"idle, waiting for a host ({'connected' if st['host_connected'] else 'no USB host'})"
        return f"{st['state']} {st['stream_format'] or ''} at {st['fps']:.1f} fps, inference {st['inference_ms'] or 0:.1f} ms"

    def close(self) -> None:
        if self._usb is not None:
            self._usb.stop()
            self._usb = None
        with self._lock:
            self._halt()
            self._source = None


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
        controller.pipeline.segmenter  # load the model now: a broken model fails the start, loudly
    except (SettingsError, OSError) as exc:
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
            controller.tick()
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
    return 0


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
