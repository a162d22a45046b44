"""The UVC userspace: serves the f_uvc video node for the daemon.

One thread polls the node: UVC events (setup/data requests from the host, stream on/off,
connect/disconnect) arrive as POLLPRI, finished output buffers as POLLOUT. Requests are answered
by the pure functions in requests.py. That thread never waits for the camera or the model: a host
gives a device 500 ms to answer a class request (USB 2.0 section 9.2.6.4), and one that gives up
reads every later answer shifted by one. So each stream gets a feeder thread that starts the
pipeline, takes encoded frames from the daemon's FrameSlot, queues them into mmap'ed output buffers
(latest frame wins; a slow host skips frames, nothing piles up) and stops the pipeline again; a
stream's feeder first waits for the previous one, so starts and stops reach the daemon in order.
When the gadget is unbound (its video node goes away) the server waits for a node to come back.

Every class request's answer time is kept on the device's own clock (the kernel stamps each event
when it queues it), so a slow answer shows whether the event thread was late to take the event,
and how much of that it spent waiting for a CPU rather than for the interpreter (the GIL).
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import mmap
import os
import select
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.stream import FrameSlot, StreamFormat
from appliance import v4l2_ioctl as k
from appliance.uvc import requests
from appliance.uvc.backend import UvcBackend
from appliance.uvc.configfs import CONFIGFS_GADGETS, UDC_CLASS, read_device

log = logging.getLogger(__name__)

V4L2_CLASS = Path("/sys/class/video4linux")
NUM_BUFFERS = 4
NODE_RETRY_S = 1.0  # how often to look for the video node again after the gadget was unbound
DUMP_DIR_ENV = "BLURCAM_UVC_DUMP_DIR"  # debug: also write every queued frame to this directory
DUMP_MAX_ENV = "BLURCAM_UVC_DUMP_MAX"  # at most this many per stream (default 30)
ANSWER_RING = 64  # the latest class requests' answer times that status() shows
SLOW_ANSWER_S = 0.1  # an answer slower than this is logged with where its time went
# The event thread hands the GIL over at every syscall and then waits to get it back, up to the
# switch interval each time while a pipeline thread runs Python: 1 ms instead of CPython's 5.
GIL_SWITCH_S = 0.001
SCHEDSTAT = "/proc/thread-self/schedstat"  # the calling thread's CPU time and run-queue wait (ns)


# --- finding the node ---------------------------------------------------------------------------

def find_uvc_function(configfs: Path = CONFIGFS_GADGETS, udc_class: Path = UDC_CLASS,
                      v4l_class: Path = V4L2_CLASS) -> tuple[str, Path] | None:
    """(/dev/videoN, configfs function dir) of a UVC function bound to a UDC, or None."""
    if not configfs.is_dir():
        return None
    for gadget in sorted(configfs.iterdir()):
        try:
            udc = (gadget / "UDC").read_text().strip()
        except OSError:
            continue
        functions = sorted(gadget.glob("functions/uvc.*"))
        if not udc or not functions:
            continue
        # f_uvc registers its video device under the UDC's gadget device ...
        for video in sorted((udc_class / udc / "device").glob("gadget*/video4linux/video*")):
            return f"/dev/{video.name}", functions[0]
        # ... and names it after the UDC (older layouts).
        for video in sorted(v4l_class.glob("video*")):
            try:
                if (video / "name").read_text().strip() == udc:
                    return f"/dev/{video.name}", functions[0]
            except OSError:
                continue
    return None


def find_uvc_node() -> str | None:
    """The f_uvc video node of the bound gadget (e.g. /dev/video0), or None on a machine without."""
    found = find_uvc_function()
    return found[0] if found else None


# --- answer times -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnswerTime:
    """How long one class request took the device, on CLOCK_MONOTONIC from the moment the kernel
    queued its setup event (the host asked) to the moment the answer went back to the kernel."""

    number: int  # the request's place in the server's count of requests
    request: str  # e.g. "GET_CUR 0x0200 0x0000" (bRequest, wValue, wIndex)
    queued_at: float  # CLOCK_MONOTONIC s (time.monotonic()) when the kernel queued the setup event
    waited_ms: float  # queued -> the event thread took the event
    answered_ms: float  # queued -> answered
    cpu_wait_ms: float | None  # event thread runnable without a CPU, since it slept or did the last event

    def as_row(self) -> list:
        return [self.number, self.request, self.queued_at, self.waited_ms, self.answered_ms,
                self.cpu_wait_ms]


def answer_summary(times: list[AnswerTime]) -> dict[str, Any]:
    """Median, 95th percentile and worst of answer times (ms), and the worst's breakdown."""
    if not times:
        return {"count": 0, "median_ms": None, "p95_ms": None, "worst_ms": None, "worst": None}
    ordered = sorted(t.answered_ms for t in times)
    worst = max(times, key=lambda t: t.answered_ms)
    return {"count": len(times), "median_ms": ordered[len(ordered) // 2],
            "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "worst_ms": worst.answered_ms, "worst": asdict(worst)}


class _RunQueueClock:
    """The calling thread's total wait for a CPU so far (s), from the kernel's schedstat; None
    where the kernel does not keep it."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(SCHEDSTAT, os.O_RDONLY)
        except OSError:
            self._fd = None

    def waited(self) -> float | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


# --- the server ---------------------------------------------------------------------------------

class _Stream:
    """Output buffers and the feeder thread of one STREAMON..STREAMOFF."""

    def __init__(self, fmt: StreamFormat, max_frame_size: int):
        self.fmt = fmt
        self.max_frame_size = max_frame_size
        self.buffers: list[mmap.mmap] = []
        self.free: list[int] = []
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.feeder: threading.Thread | None = None
        self.slot: FrameSlot | None = None
        self.previous: threading.Thread | None = None  # the last stream's feeder, maybe still stopping


_REQUEST_NAMES = {requests.SET_CUR: "SET_CUR", requests.GET_CUR: "GET_CUR", requests.GET_MIN: "GET_MIN",
                  requests.GET_MAX: "GET_MAX", requests.GET_RES: "GET_RES", requests.GET_LEN: "GET_LEN",
                  requests.GET_INFO: "GET_INFO", requests.GET_DEF: "GET_DEF"}

_EVENT_NAMES = {k.UVC_EVENT_DATA: "data", k.UVC_EVENT_STREAMON: "stream on",
                k.UVC_EVENT_STREAMOFF: "stream off", k.UVC_EVENT_CONNECT: "connect",
                k.UVC_EVENT_DISCONNECT: "disconnect"}


class UvcServer:
    """Serves the f_uvc video node for the daemon, which it sees only as a UvcBackend."""

    def __init__(self, backend: UvcBackend, node_path: str, function_dir: Path | None = None,
                 dump_dir: Path | None = None):
        self.backend = backend
        self.node_path = node_path
        self.function_dir = function_dir
        env_dump = os.environ.get(DUMP_DIR_ENV)
        self.dump_dir = dump_dir or (Path(env_dump) if env_dump else None)
        self.dump_max = int(os.environ.get(DUMP_MAX_ENV, "30"))
        self._fd = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stream: _Stream | None = None
        self._last_feeder: threading.Thread | None = None
        self.device: requests.Device | None = None
        self._state: requests.State | None = None
        self._answers: deque[AnswerTime] = deque(maxlen=ANSWER_RING)
        self._worst_answer: AnswerTime | None = None
        self._run_queue: _RunQueueClock | None = None  # the event thread's, opened by that thread
        self._run_queue_at_sleep: float | None = None
        self._event_taken_at = 0.0
        self._event_queued_at = 0.0
        self._stats: dict[str, Any] = {
            "connected": False, "speed": None, "streaming": False, "committed": None,
            "frames_queued": 0, "frames_skipped": 0, "frames_too_big": 0, "requests": 0,
            "stalls": 0, "controls_set": 0, "streams": 0, "disconnects": 0, "node_lost": 0,
            "last_error": None}

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.function_dir is None:
            found = find_uvc_function()
            if found is None or found[0] != self.node_path:
                raise RuntimeError(f"{self.node_path}: no bound configfs UVC function owns this node")
            self.function_dir = found[1]
        self._open_node()
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="uvc-events", daemon=True)
        self._thread.start()

    def _open_node(self) -> None:
        """Open the video node, read what the gadget advertises and subscribe to its events."""
        assert self.function_dir is not None
        self.device = read_device(self.function_dir)
        self._state = requests.initial_state(self.device, self.backend.image_controls())
        self._fd = os.open(self.node_path, os.O_RDWR | os.O_NONBLOCK)
        try:
            for event in k.UVC_EVENTS:
                k.ioctl(self._fd, k.VIDIOC_SUBSCRIBE_EVENT, k.v4l2_event_subscription(type=event))
        except OSError:
            os.close(self._fd)
            self._fd = -1
            raise
        log.info("UVC: serving %s (%s): %s", self.node_path, self.function_dir,
                 "; ".join(f"{f.encoding} " + ",".join(fr.size for fr in f.frames)
                           for f in self.device.formats))

    def _lose_node(self, why: str) -> None:
        """The video node is gone (the gadget was unbound or rebuilt): drop it and its stream."""
        self._stats["node_lost"] += 1
        self._stats["last_error"] = f"video node lost: {why}"
        self._stop_streaming("video node gone")
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._stats["connected"]:
            self._stats["connected"] = False
            self.backend.set_host_state(False, None)
        log.warning("UVC: %s is gone (%s); waiting for the gadget to come back", self.node_path, why)

    def _find_node_again(self) -> None:
        found = find_uvc_function()
        if found is None:
            return
        self.node_path, self.function_dir = found[0], found[1]
        try:
            self._open_node()
        except (OSError, ValueError) as exc:  # half-built gadget: try again later
            log.warning("UVC: cannot serve %s yet: %s", self.node_path, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self._stop_streaming("shutdown")
        if self._last_feeder is not None:
            self._last_feeder.join(10)  # the pipeline is stopped before the daemon goes on closing
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1

    def status(self) -> dict:
        out = dict(self._stats)
        out["node"] = self.node_path
        out["error_code"] = int(self._state.error_code) if self._state else 0
        answers = list(self._answers)
        out["answers"] = answer_summary(answers)
        out["answers"]["worst_ever"] = asdict(self._worst_answer) if self._worst_answer else None
        # number, request, queued at, waited, answered, cpu wait: compact rows for the ring
        out["answers"]["recent"] = [a.as_row() for a in answers]
        return out

    def answer_times(self) -> list[AnswerTime]:
        """The latest class requests' answer times (at most ANSWER_RING), oldest first."""
        return list(self._answers)

    # --- event loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        self._run_queue = _RunQueueClock()
        try:
            self._serve()
        finally:
            self._run_queue.close()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop.is_set():
            if self._fd < 0:
                if select.select([self._wake_r], [], [], NODE_RETRY_S)[0]:
                    break
                self._find_node_again()
                continue
            # POLLOUT only while streaming: an idle vb2 queue reports POLLERR, i.e. always ready.
            mask = select.POLLPRI | (select.POLLOUT if self._stream else 0)
            poller.register(self._fd, mask)
            self._run_queue_at_sleep = self._run_queue.waited() if self._run_queue else None
            try:
                ready = dict(poller.poll(1000))
            except InterruptedError:
                continue
            if self._wake_r in ready:
                break
            revents = ready.get(self._fd, 0)
            try:
                if revents & select.POLLPRI:
                    self._drain_events()
                if self._stream and revents & (select.POLLOUT | select.POLLERR):
                    self._reclaim_buffers()
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    poller.unregister(self._fd)
                    self._lose_node(exc.strerror or os.strerror(exc.errno))
                    continue
                self._log_node_error(exc)
            except Exception as exc:  # one bad event must not end the webcam
                self._log_node_error(exc)

    def _log_node_error(self, exc: Exception) -> None:
        log.exception("UVC: error handling the video node")
        self._stats["last_error"] = repr(exc)
        time.sleep(0.05)

    def _drain_events(self) -> None:
        event = k.v4l2_event()
        while True:
            try:
                k.ioctl(self._fd, k.VIDIOC_DQEVENT, event)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EAGAIN):
                    return
                raise
            self._event_taken_at = time.monotonic()
            self._event_queued_at = event.timestamp.tv_sec + event.timestamp.tv_nsec / 1e9
            self._on_event(event.type, bytes(event.u.data))
            if self._run_queue is not None:  # the next event's CPU wait counts from here
                self._run_queue_at_sleep = self._run_queue.waited()
            took = time.monotonic() - self._event_taken_at
            if took > SLOW_ANSWER_S and event.type != k.UVC_EVENT_SETUP:  # setups: _note_answer
                log.warning("UVC: event %s took %.0f ms to handle (requests behind it wait)",
                            _EVENT_NAMES.get(event.type, event.type), took * 1000)

    def _on_event(self, kind: int, data: bytes) -> None:
        if kind == k.UVC_EVENT_SETUP:
            self._on_setup(requests.Setup.parse(data[:8]))
        elif kind == k.UVC_EVENT_DATA:
            length = int.from_bytes(data[:4], "little", signed=True)
            self._on_data(data[4:4 + max(0, min(length, 60))])
        elif kind == k.UVC_EVENT_STREAMON:
            self._start_streaming()
        elif kind == k.UVC_EVENT_STREAMOFF:
            self._stop_streaming("host stopped streaming")
        elif kind == k.UVC_EVENT_CONNECT:
            self._stats.update(connected=True, speed=int.from_bytes(data[:4], "little"))
            device, _ = self._negotiation()
            self._state = requests.initial_state(device, self.backend.image_controls())
            self.backend.set_host_state(True, None)
            log.info("UVC: host connected")
        elif kind == k.UVC_EVENT_DISCONNECT:
            self._stats["disconnects"] += 1
            self._stats["connected"] = False
            self._stop_streaming("host disconnected")
            self.backend.set_host_state(False, None)
            log.info("UVC: host disconnected")

    # --- requests ----------------------------------------------------------------------------
    def _negotiation(self) -> tuple[requests.Device, requests.State]:
        """What the gadget advertises and the host's requests so far."""
        # Both are set by _open_node, and events come only from a node it opened.
        assert self.device is not None and self._state is not None, "UVC event before the node was opened"
        return self.device, self._state

    def _on_setup(self, setup: requests.Setup) -> None:
        self._stats["requests"] += 1
        device, state = self._negotiation()
        try:
            state, reply = requests.handle_setup(
                device, requests.with_values(state, self.backend.image_controls()), setup)
        except Exception:  # the host waits for an answer: a stall beats a timeout
            log.exception("UVC: answering %s", setup)
            reply = requests.STALL
        self._state = state
        if reply.stalled:
            self._stats["stalls"] += 1
            log.debug("UVC: stall %s (error code %s)", setup, state.error_code.name)
        self._respond(reply)
        self._note_answer(setup)

    def _note_answer(self, setup: requests.Setup) -> None:
        """Keep how long this request took (see AnswerTime); log it when slow."""
        now = time.monotonic()
        queued = self._event_queued_at
        rq_now = self._run_queue.waited() if self._run_queue else None
        rq_then = self._run_queue_at_sleep
        answer = AnswerTime(
            number=self._stats["requests"],
            request=f"{_REQUEST_NAMES.get(setup.request, hex(setup.request))} "
                    f"{setup.value:#06x} {setup.index:#06x}",
            queued_at=round(queued, 4), waited_ms=_ms(self._event_taken_at - queued), answered_ms=_ms(now - queued),
            cpu_wait_ms=_ms(rq_now - rq_then) if rq_now is not None and rq_then is not None else None)
        self._answers.append(answer)
        if self._worst_answer is None or answer.answered_ms > self._worst_answer.answered_ms:
            self._worst_answer = answer
        if answer.answered_ms > SLOW_ANSWER_S * 1000:
            log.warning("UVC: slow answer to %s: %.0f ms after the host asked (%.0f ms before the "
                        "event thread took it; %s ms waiting for a CPU)", answer.request,
                        answer.answered_ms, answer.waited_ms, answer.cpu_wait_ms)

    def _on_data(self, data: bytes) -> None:
        device, state = self._negotiation()
        self._state, effects = requests.handle_data(device, state, data)
        if effects.committed is not None:
            self._stats["committed"] = str(effects.committed)
            log.info("UVC: host committed %s", effects.committed)
        if effects.changed:
            self._stats["controls_set"] += 1
            try:
                self.backend.set_image_controls(effects.changed)
            except ValueError as exc:  # SettingsError: keep the old value
                log.warning("UVC: host control change refused: %s", exc)

    def _respond(self, reply: requests.Reply) -> None:
        response = k.uvc_request_data()
        if reply.data is None:  # stalled
            response.length = -errno.EPIPE  # f_uvc halts ep0 for a negative length
        else:
            response.length = len(reply.data)
            ctypes.memmove(response.data, reply.data, len(reply.data))
        try:
            k.ioctl(self._fd, k.UVCIOC_SEND_RESPONSE, response)
        except OSError as exc:  # the host went away mid-request
            log.warning("UVC: sending the response failed: %s", exc)

    # --- streaming ---------------------------------------------------------------------------
    def _start_streaming(self) -> None:
        self._stop_streaming("restart")
        device, state = self._negotiation()
        fmt = requests.committed_format(device, state)
        stream = _Stream(fmt, requests.committed_frame(device, state).max_frame_size)
        try:
            self._setup_buffers(stream)
            # VIDIOC_STREAMON completes the host's SET_INTERFACE: do it before the (slower)
            # camera and model start, so the host does not time out.
            k.ioctl(self._fd, k.VIDIOC_STREAMON, ctypes.c_int(k.V4L2_BUF_TYPE_VIDEO_OUTPUT))
        except OSError as exc:
            log.error("UVC: cannot start the output queue for %s: %s", fmt, exc)
            self._stats["last_error"] = f"stream start: {exc}"
            self._release_buffers(stream)
            return
        self._begin(stream)
        log.info("UVC: streaming %s", fmt)

    def _begin(self, stream: _Stream) -> None:
        """Make `stream` the current one; its feeder starts the pipeline once the last stopped."""
        self._stream = stream
        self._stats.update(streaming=True, committed=str(stream.fmt))
        self._stats["streams"] += 1
        self.backend.set_host_state(True, stream.fmt)
        stream.previous = self._last_feeder
        stream.feeder = threading.Thread(target=self._feed, args=(stream,), name="uvc-feed", daemon=True)
        self._last_feeder = stream.feeder
        stream.feeder.start()

    def _setup_buffers(self, stream: _Stream) -> None:
        fmt = k.v4l2_format(type=k.V4L2_BUF_TYPE_VIDEO_OUTPUT)
        pix = fmt.fmt.pix
        pix.width, pix.height = stream.fmt.width, stream.fmt.height
        if stream.fmt.encoding == "yuyv":
            pix.pixelformat, pix.bytesperline = k.V4L2_PIX_FMT_YUYV, stream.fmt.width * 2
            pix.colorspace = k.V4L2_COLORSPACE_SRGB
        else:
            pix.pixelformat, pix.bytesperline = k.V4L2_PIX_FMT_MJPEG, 0
            pix.colorspace = k.V4L2_COLORSPACE_JPEG
        pix.field = k.V4L2_FIELD_NONE
        pix.sizeimage = stream.max_frame_size
        k.ioctl(self._fd, k.VIDIOC_S_FMT, fmt)
        req = k.v4l2_requestbuffers(count=NUM_BUFFERS, type=k.V4L2_BUF_TYPE_VIDEO_OUTPUT,
                                    memory=k.V4L2_MEMORY_MMAP)
        k.ioctl(self._fd, k.VIDIOC_REQBUFS, req)
        for index in range(req.count):
            buf = k.v4l2_buffer(index=index, type=k.V4L2_BUF_TYPE_VIDEO_OUTPUT,
                                memory=k.V4L2_MEMORY_MMAP)
            k.ioctl(self._fd, k.VIDIOC_QUERYBUF, buf)
            stream.buffers.append(mmap.mmap(self._fd, buf.length, mmap.MAP_SHARED,
                                            mmap.PROT_READ | mmap.PROT_WRITE, offset=buf.m.offset))
            stream.free.append(index)

    def _release_buffers(self, stream: _Stream) -> None:
        for m in stream.buffers:
            m.close()
        stream.buffers.clear()
        if self._fd < 0:
            return
        req = k.v4l2_requestbuffers(count=0, type=k.V4L2_BUF_TYPE_VIDEO_OUTPUT,
                                    memory=k.V4L2_MEMORY_MMAP)
        try:
            k.ioctl(self._fd, k.VIDIOC_REQBUFS, req)
        except OSError as exc:
            log.warning("UVC: freeing buffers: %s", exc)

    def _stop_streaming(self, why: str) -> None:
        """End the current stream without waiting for the pipeline: the feeder stops that."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        with stream.cond:  # the feeder touches the buffers only under this lock
            stream.stopping.set()
            stream.cond.notify_all()
            if self._fd >= 0:  # else the node is gone, and its queue with it
                try:
                    k.ioctl(self._fd, k.VIDIOC_STREAMOFF, ctypes.c_int(k.V4L2_BUF_TYPE_VIDEO_OUTPUT))
                except OSError as exc:
                    log.warning("UVC: STREAMOFF: %s", exc)
            self._release_buffers(stream)
        self.backend.set_host_state(self._stats["connected"], None)
        self._stats["streaming"] = False
        log.info("UVC: stream %s stopped (%s)", stream.fmt, why)

    def _reclaim_buffers(self) -> None:
        stream = self._stream
        while stream is not None:
            buf = k.v4l2_buffer(type=k.V4L2_BUF_TYPE_VIDEO_OUTPUT, memory=k.V4L2_MEMORY_MMAP)
            try:
                k.ioctl(self._fd, k.VIDIOC_DQBUF, buf)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return
                # ENODEV/EIO: the host vanished without a STREAMOFF (cable pulled).
                self._stop_streaming(f"output queue failed: {exc.strerror}")
                return
            with stream.cond:
                stream.free.append(buf.index)
                stream.cond.notify_all()

    def _feed(self, stream: _Stream) -> None:
        """The pipeline's side of one stream: start it, feed the host, stop it."""
        if stream.previous is not None:
            stream.previous.join()  # its stop_stream() must not land after our start_stream()
        if not stream.stopping.is_set():  # else stopped before it began: no camera at all
            try:
                stream.slot = self.backend.start_stream(stream.fmt)
            except Exception as exc:
                log.error("UVC: the pipeline did not start for %s: %s", stream.fmt, exc)
                self._stats["last_error"] = f"pipeline: {exc}"
                stream.stopping.wait()
            else:
                self._queue_frames(stream)
        self.backend.stop_stream()

    def _queue_frames(self, stream: _Stream) -> None:
        assert stream.slot is not None
        dump = _FrameDump(self.dump_dir, stream.fmt, self.dump_max) if self.dump_dir else None
        seq = 0
        while not stream.stopping.is_set():
            got = stream.slot.get(seq, timeout=0.25)
            if got is None:
                continue
            with stream.cond:
                if not stream.cond.wait_for(lambda: stream.free or stream.stopping.is_set(), 0.5):
                    self._stats["frames_skipped"] += 1  # the host is not taking frames
                    seq = got[0]
                    continue
                if stream.stopping.is_set():
                    return
                newest_seq, newest_data = stream.slot.latest()
                seq, data = (newest_seq, newest_data) if newest_data is not None else got
                if len(data) > stream.max_frame_size:
                    self._stats["frames_too_big"] += 1
                    continue
                index = stream.free.pop(0)
                stream.buffers[index][:len(data)] = data
                buf = k.v4l2_buffer(index=index, type=k.V4L2_BUF_TYPE_VIDEO_OUTPUT,
                                    memory=k.V4L2_MEMORY_MMAP, bytesused=len(data),
                                    field=k.V4L2_FIELD_NONE)
                try:
                    k.ioctl(self._fd, k.VIDIOC_QBUF, buf)
                except OSError as exc:
                    stream.free.append(index)
                    self._stats["last_error"] = f"QBUF: {exc.strerror}"
                    stream.cond.wait(0.1)
                    continue
            self._stats["frames_queued"] += 1
            if dump is not None:
                dump.write(data)


class _FrameDump:
    """Debug: the frames exactly as queued to the host, for tests that cannot see the host side."""

    def __init__(self, directory: Path, fmt: StreamFormat, limit: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self.limit = limit
        self.count = 0
        self.stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{fmt.encoding}-{fmt.width}x{fmt.height}"

    def write(self, data: bytes) -> None:
        if self.count >= self.limit:
            return
        ext = "jpg" if self.fmt.encoding == "mjpeg" else "yuyv"
        path = self.directory / f"{self.stem}-{self.count:04d}.{ext}"
        path.write_bytes(data)
        self.count += 1
        meta = {"encoding": self.fmt.encoding, "width": self.fmt.width, "height": self.fmt.height,
                "fps": self.fmt.fps, "frames": self.count}
        (self.directory / f"{self.stem}.json").write_text(json.dumps(meta))
