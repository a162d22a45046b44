"""Runs the camera and the pipeline exactly while someone wants frames, and restarts them when
they fail.

Who wants frames: a USB host streaming a committed format, or the settings page's preview (which
keeps the pipeline alive for PREVIEW_SECONDS after its last request). Requests only record what is
wanted and return at once; one supervisor thread makes the running pipeline match, so a caller (the
UVC event thread above all) never waits for a camera to open or a pipeline to stop. The same
thread restarts a failed pipeline, after a back-off that grows while the camera keeps failing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from appliance.pipeline import IDLE_STATUS, FramePipeline, ThreadedPipeline
from appliance.sources.base import Source, SourceError
from appliance.stream import FrameSlot, StreamFormat

log = logging.getLogger(__name__)

# 30 fps: the page's preview stream should look like video (it runs only while a page watches).
PREVIEW_FORMAT = StreamFormat("mjpeg", 640, 360, 30)
PREVIEW_SECONDS = 10.0  # a preview keeps the pipeline alive this long after the last request
IDLE_WAKE = 0.5  # the supervisor looks around (and shows it is alive) at least this often
# The pipeline runs this much nicer than the rest of the daemon: when the model fills every core,
# the UVC event thread (and the control socket) still get a CPU the moment they wake, so the host
# is answered within USB's 500 ms. Threads inherit their creator's nice value, so the supervisor
# thread lowers its own and every pipeline thread it starts runs at that level too.
PIPELINE_NICE = 10


class Backoff:
    """When to retry a failing camera: 1 s, 2 s, 4 s ... at most 30 s after each failure in a row;
    from scratch again once it delivers frames."""

    FIRST, LONGEST = 1.0, 30.0

    def __init__(self) -> None:
        self.delay = 0.0
        self.retry_at = 0.0

    def failed(self, now: float) -> float:
        self.delay = min(self.LONGEST, max(self.FIRST, self.delay * 2))
        self.retry_at = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = self.retry_at = 0.0

    def wait(self, now: float) -> float:
        """Seconds until a retry is allowed (0: now)."""
        return max(0.0, self.retry_at - now)


@dataclass(frozen=True)
class _Want:
    """What should run: a mode, its format and the slot its frames go to."""

    mode: str  # "streaming" or "preview"
    fmt: StreamFormat
    slot: FrameSlot


@dataclass
class _Run:
    want: _Want
    runner: ThreadedPipeline


class Supervisor:
    def __init__(self, open_source: Callable[[], Source], pipeline: FramePipeline,
                 fault: str = "", clock: Callable[[], float] = time.monotonic):
        self._open_source = open_source
        self.pipeline = pipeline
        self._fault = fault
        self._clock = clock
        self._cond = threading.Condition()
        self._stream: _Want | None = None  # the host's stream, while it streams
        self._preview: _Want | None = None  # the page's preview, while it watches
        self._preview_until = 0.0
        self._preview_watchers = 0  # preview requests in progress
        self._run: _Run | None = None
        self._source: Source | None = None
        self.source_name = ""
        self.backoff = Backoff()
        self.last_error = ""
        self.failures = 0  # pipeline starts or runs that failed, ever
        self.beat = clock()
        self._closing = False
        # Started by the first request: a daemon nobody asked for frames runs no thread for it.
        self._thread: threading.Thread | None = None

    # --- requests: record what is wanted, never wait for the camera --------------------------
    def start_stream(self, fmt: StreamFormat) -> FrameSlot:
        """A host streams `fmt`: its frames arrive in the returned slot (which stays the same
        across restarts of a failing pipeline) until stop_stream()."""
        slot = FrameSlot()
        with self._cond:
            if self._stream is not None:
                self._stream.slot.close()
            self._stream = _Want("streaming", fmt, slot)
            self._wake()
        return slot

    def stop_stream(self) -> None:
        with self._cond:
            if self._stream is not None:
                self._stream.slot.close()
                self._stream = None
                self._cond.notify_all()

    @contextmanager
    def watching_preview(self, timeout: float) -> Iterator[tuple[ThreadedPipeline, FrameSlot]]:
        """A preview request: the running pipeline and its frames. The pipeline runs (or starts)
        while the request lasts and PREVIEW_SECONDS after it ends, so a page that asks again after
        a slow answer finds it still running. Waits up to `timeout` s for a start; SourceError
        when the camera cannot run."""
        with self._cond:
            self._preview_watchers += 1
        try:
            yield self._running_for_preview(timeout)
        finally:
            with self._cond:
                self._preview_watchers -= 1
                self._preview_until = max(self._preview_until, self._clock() + PREVIEW_SECONDS)
                self._cond.notify_all()

    def _running_for_preview(self, timeout: float) -> tuple[ThreadedPipeline, FrameSlot]:
        deadline = self._clock() + timeout
        with self._cond:
            if self._run is None:
                wait = self.backoff.wait(self._clock())
                if wait > 0:  # the camera just failed: do not hammer it from every page refresh
                    raise SourceError(f"camera unavailable ({self.last_error}); retrying in {wait:.0f} s")
            failures = self.failures
            self._wake()
            while self._run is None:
                left = deadline - self._clock()
                if self.failures != failures:
                    raise SourceError(f"camera unavailable ({self.last_error})")
                if left <= 0:
                    raise SourceError("the camera did not start in time")
                self._cond.wait(left)
            return self._run.runner, self._run.want.slot

    def close(self, timeout: float | None = None) -> None:
        """Stop the pipeline and the supervisor (on shutdown; run_daemon cuts a hung stop short)."""
        with self._cond:
            self._closing = True
            self._stream = self._preview = None
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _wake(self) -> None:
        """Tell the supervisor thread (started here the first time) that the wants changed.
        Caller holds the lock."""
        if self._thread is None and not self._closing:
            self.beat = self._clock()
            self._thread = threading.Thread(target=self._loop, name="blurcam-supervisor", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    # --- what is running --------------------------------------------------------------------
    @property
    def mode(self) -> str:
        run = self._run
        return run.want.mode if run else "idle"

    @property
    def stream_format(self) -> StreamFormat | None:
        """The format a host streams, while it does (the pipeline may still be starting)."""
        want = self._stream
        return want.fmt if want else None

    @property
    def source(self) -> Source | None:
        """The open camera, if any (for control changes)."""
        return self._source

    @property
    def runner(self) -> ThreadedPipeline | None:
        run = self._run
        return run.runner if run else None

    def healthy(self, stale_after: float) -> bool:
        """The supervisor and every worker of the running pipeline showed signs of life within
        `stale_after` s (the service watchdog is fed only then)."""
        now = self._clock()
        runner = self.runner
        beats = list(runner.heartbeat.values()) if runner else []
        if self._thread is not None:  # not started: nothing asked for frames yet
            beats.append(self.beat)
        return all(now - beat < stale_after for beat in beats)

    def status(self) -> dict:
        runner = self.runner
        out = {
            "state": self.mode,
            "fps": round(runner.current_fps(), 1) if runner else 0.0,
            "inference_ms": round(runner.inference_ms, 2) if runner else None,
            "frame_ms": round(runner.frame_ms, 2) if runner else None,
            "latency_ms": round(runner.latency_ms, 1) if runner else None,
            "error": self.last_error or None,
            "retry_in_s": round(self.backoff.wait(self._clock()), 1) or None,
        }
        # Live figures: capture-to-output latency, the applied mask's age, frames dropped.
        out.update(runner.stats().as_status() if runner else IDLE_STATUS)
        return out

    # --- the supervisor thread ----------------------------------------------------------------
    def _wanted(self, now: float) -> _Want | None:
        if self._stream is not None:
            return self._stream
        if now < self._preview_until or self._preview_watchers:
            if self._preview is None:
                self._preview = _Want("preview", PREVIEW_FORMAT, FrameSlot())
            return self._preview
        if self._preview is not None:
            self._preview.slot.close()
            self._preview = None
        return None

    def _loop(self) -> None:
        lower_thread_priority(PIPELINE_NICE)
        while True:
            with self._cond:
                now = self._clock()
                self.beat = now
                run, want = self._run, self._wanted(now)
                if run is not None and run.runner.error is not None:
                    action = "failed"
                elif run is not None and run.want != want:
                    action = "stop"
                elif self._closing:
                    return
                elif run is None and want is not None and self.backoff.wait(now) == 0:
                    action = "start"
                else:
                    if run is not None and run.runner.frames_out > 0:
                        self.backoff.succeeded()  # healthy again
                    waits = [IDLE_WAKE, self.backoff.wait(now) or IDLE_WAKE]
                    if self._preview is not None and self._stream is None and not self._preview_watchers:
                        waits.append(max(0.01, self._preview_until - now))
                    self._cond.wait(min(waits))
                    continue
            # Outside the lock: opening and stopping a camera can take a while, and requests
            # must keep being accepted meanwhile.
            if action == "start":
                assert want is not None
                self._start(want)
            elif action == "stop":
                assert run is not None
                self._halt(run)
            else:
                assert run is not None
                self._fail(run)

    def _start(self, want: _Want) -> None:
        try:
            if self._source is None:
                self._source = self._open_source()
            self.source_name = self._source.name
            runner = ThreadedPipeline(self._source, want.fmt, self.pipeline, want.slot, fault=self._fault)
            runner.start()
        except (SourceError, OSError) as exc:
            self._source = None  # reopen the device from scratch next time
            with self._cond:
                delay = self._failed(str(exc))
            log.error("cannot start the pipeline for %s: %s; retrying in %.0f s", want.fmt, exc, delay)
            return
        with self._cond:
            self._run = _Run(want, runner)
            self.last_error = ""
            self._cond.notify_all()
        log.info("pipeline started: %s for %s (source %s)", want.fmt, want.mode, self.source_name)

    def _halt(self, run: _Run) -> None:
        with self._cond:
            self._run = None
            self._cond.notify_all()
        run.runner.stop()
        log.info("pipeline stopped after %d frames", run.runner.frames_out)

    def _fail(self, run: _Run) -> None:
        self._halt(run)
        self._source = None  # reopen the device from scratch
        with self._cond:
            delay = self._failed(str(run.runner.error))
        log.error("pipeline failed (%s); retrying in %.0f s", self.last_error, delay)

    def _failed(self, error: str) -> float:
        """Record a failure (caller holds the lock); returns the back-off delay."""
        self.last_error = error
        self.failures += 1
        self._cond.notify_all()
        return self.backoff.failed(self._clock())


def lower_thread_priority(by: int) -> None:
    """Raise the calling thread's nice value by `by` (Linux: a thread id is a PRIO_PROCESS target;
    threads it starts later inherit the value). Not being allowed is no reason to stop."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as exc:
        log.warning("cannot lower the pipeline's CPU priority: %s", exc)
