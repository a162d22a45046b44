"""One frame's journey: segment -> refine -> composite -> encode, synchronously or on threads."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from appliance import adjust
from appliance.compose import Compositor, mirror
from appliance.encode import encoder_for
from appliance.frame import Frame, split_i420
from appliance.refine import MaskRefiner, guided_upsample
from appliance.segment import Segmenter, load_segmenter
from appliance.settings import Settings
from appliance.stream import FrameSlot, StreamFormat

log = logging.getLogger(__name__)

# Effects that need the person's outline; the others never run the model.
MASKED_EFFECTS = ("blur", "replace")


@dataclass
class Processed:
    """The result for one frame, with the intermediate masks (for previews and tests)."""

    frame: Frame
    yuv: np.ndarray
    alpha_low: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds per stage


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class FramePipeline:
    """The processing stages, configured from Settings. Not thread-safe by itself: the threaded
    runner calls `segment` from one thread and `finish` from another, which share no state but
    the (immutable) settings and the segmenter reference."""

    def __init__(self, settings: Settings, background_rgb: np.ndarray | None = None):
        self.settings = settings
        # Image controls the camera applies itself; the rest are done here in software.
        self.hardware_controls: frozenset[str] = frozenset()
        self.refiner = MaskRefiner()
        self.compositor = Compositor()
        self.compositor.set_background(background_rgb)
        self._segmenter: Segmenter | None = None
        self._segmenter_key: tuple | None = None

    def configure(self, settings: Settings, background_rgb: np.ndarray | None = None,
                  background_changed: bool = False) -> None:
        """Apply new settings from the next frame on (a model change reloads lazily)."""
        self.settings = settings
        if background_changed:
            self.compositor.set_background(background_rgb)

    @property
    def segmenter(self) -> Segmenter:
        s = self.settings
        key = (s.model, s.precision, s.inference_threads)
        if self._segmenter is None or self._segmenter_key != key:
            self._segmenter = load_segmenter(*key)
            self._segmenter_key = key
            self.refiner.reset()
        return self._segmenter

    @property
    def lores_size(self) -> tuple[int, int]:
        return self.segmenter.input_size

    @property
    def needs_mask(self) -> bool:
        return self.settings.effect in MASKED_EFFECTS

    def segment(self, frame: Frame, timings: dict[str, float] | None = None) -> np.ndarray:
        """The refined low-resolution alpha for a frame."""
        timings = {} if timings is None else timings
        seg, s = self.segmenter, self.settings
        t = time.perf_counter()
        tensor = seg.preprocess(frame.lores)
        timings["preprocess"] = _ms(t)
        t = time.perf_counter()
        prob = seg.infer(tensor)
        timings["inference"] = _ms(t)
        t = time.perf_counter()
        alpha = self.refiner.refine_low(prob, s.mask_threshold, s.edge_softness, s.temporal_smoothing)
        timings["refine"] = _ms(t)
        return alpha.copy()

    def finish(self, frame: Frame, alpha_low: np.ndarray | None,
               timings: dict[str, float] | None = None) -> np.ndarray:
        """Controls, upsampling and the effect: the output I420 frame."""
        timings = {} if timings is None else timings
        s = self.settings
        yuv = frame.yuv
        controls = {k: (neutral if k in self.hardware_controls else getattr(s, k))
                    for k, neutral in adjust.NEUTRAL.items()}
        if not adjust.is_neutral(controls) and s.effect != "privacy":
            yuv = adjust.adjust(yuv, **controls)
        t = time.perf_counter()
        alpha_full = alpha_half = None
        if alpha_low is not None and s.effect in MASKED_EFFECTS:
            alpha_full, alpha_half = guided_upsample(alpha_low, split_i420(yuv)[0])
        timings["refine"] = timings.get("refine", 0.0) + _ms(t)
        t = time.perf_counter()
        out = self.compositor.compose(yuv, s.effect, alpha_low=alpha_low, alpha_full=alpha_full,
                                      alpha_half=alpha_half, blur_strength=s.blur_strength,
                                      privacy_text=s.privacy_text)
        if s.mirror and s.effect != "privacy":
            out = mirror(out)
        timings["composite"] = _ms(t)
        return out

    def process(self, frame: Frame) -> Processed:
        timings: dict[str, float] = {}
        alpha = self.segment(frame, timings) if self.needs_mask else None
        out = self.finish(frame, alpha, timings)
        return Processed(frame, out, alpha, timings)


class _Newest:
    """A one-item mailbox: the writer replaces, the reader waits for something newer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item = None
        self._seq = 0

    def put(self, item) -> None:
        with self._cond:
            self._item, self._seq = item, self._seq + 1
            self._cond.notify_all()

    def get_newer(self, seq: int, timeout: float) -> tuple[int, object] | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > seq, timeout):
                return None
            return self._seq, self._item

    def peek(self):
        with self._cond:
            return self._item


class ThreadedPipeline:
    """Capture, segmentation and compose+encode on their own threads.

    The newest frame wins everywhere: segmentation always takes the latest capture, compose
    reuses the last mask rather than wait for a slow model (only the very first frame waits, so
    no frame ever leaves without a mask), and every hand-over holds at most two frames.
    """

    THREADS = ("capture", "segment", "compose")

    def __init__(self, source, fmt: StreamFormat, pipeline: FramePipeline, slot: FrameSlot,
                 fault: str = ""):
        self.source, self.fmt, self.pipeline, self.slot = source, fmt, pipeline, slot
        self._fault = fault
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._compose_queue: queue.Queue = queue.Queue(maxsize=2)
        self._newest_frame = _Newest()
        self._newest_mask = _Newest()
        self.heartbeat: dict[str, float] = {}
        self.error: BaseException | None = None
        self.frames_out = 0
        self.fps = 0.0
        self.inference_ms = 0.0
        self.frame_ms = 0.0
        self.latency_ms = 0.0
        self.last_output_at = 0.0  # time.monotonic() of the newest frame out
        self.latest: Processed | None = None

    def start(self) -> None:
        self.source.start(self.fmt.width, self.fmt.height, self.fmt.fps, self.pipeline.lores_size)
        self.pipeline.hardware_controls = frozenset(getattr(self.source, "hardware_controls", ()))
        self._running.set()
        now = time.monotonic()
        for name in self.THREADS:
            self.heartbeat[name] = now
            t = threading.Thread(target=self._guard, args=(name,), name=f"blurcam-{name}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._running.clear()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        self.source.stop()

    @property
    def running(self) -> bool:
        return self._running.is_set() and self.error is None

    def current_fps(self, stale_after: float = 1.0) -> float:
        """The output rate, or 0 once no frame has left for `stale_after` seconds (a stall)."""
        return self.fps if time.monotonic() - self.last_output_at < stale_after else 0.0

    def _guard(self, name: str) -> None:
        try:
            getattr(self, f"_{name}_loop")()
        except BaseException as exc:  # a dead worker must be visible, not silent
            log.error("%s thread failed: %s", name, exc, exc_info=not isinstance(exc, RuntimeError))
            self.error = exc
            self._running.clear()

    def _beat(self, name: str) -> None:
        self.heartbeat[name] = time.monotonic()

    def _capture_loop(self) -> None:
        while self._running.is_set():
            frame = self.source.read()
            self._beat("capture")
            self._newest_frame.put(frame)
            try:
                self._compose_queue.put_nowait(frame)
            except queue.Full:  # compose is behind: drop the oldest, keep latency low
                try:
                    self._compose_queue.get_nowait()
                except queue.Empty:
                    pass
                self._compose_queue.put_nowait(frame)

    def _segment_loop(self) -> None:
        seen = 0
        while self._running.is_set():
            self._beat("segment")
            if not self.pipeline.needs_mask:
                time.sleep(0.05)
                continue
            got = self._newest_frame.get_newer(seen, timeout=0.2)
            if got is None:
                continue
            seen, frame = got
            timings: dict[str, float] = {}
            alpha = self.pipeline.segment(frame, timings)
            self.inference_ms = 0.9 * self.inference_ms + 0.1 * timings["inference"] if self.inference_ms else timings["inference"]
            self._newest_mask.put(alpha)

    def _compose_loop(self) -> None:
        encoder_quality = None
        encoder = None
        last_out = time.monotonic()
        iterations = 0
        while self._running.is_set():
            self._beat("compose")
            iterations += 1
            if self._fault == "stall-work-loop" and iterations > 30:
                log.warning("fault injection: compose loop stalls now")
                threading.Event().wait()
            try:
                frame = self._compose_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            t0 = time.perf_counter()
            alpha = None
            if self.pipeline.needs_mask:
                alpha = self._newest_mask.peek()
                while alpha is None and self._running.is_set():  # only ever before the first mask
                    got = self._newest_mask.get_newer(0, timeout=0.2)
                    self._beat("compose")
                    alpha = got[1] if got else None
                if alpha is None:
                    break
            out = self.pipeline.finish(frame, alpha)
            q = self.pipeline.settings.jpeg_quality
            if encoder is None or q != encoder_quality:
                encoder, encoder_quality = encoder_for(self.fmt, q), q
            self.slot.put(encoder.encode(out))
            self.latest = Processed(frame, out, alpha)
            now = time.monotonic()
            self.last_output_at = now
            self.frames_out += 1
            dt = now - last_out
            last_out = now
            self.fps = (0.9 * self.fps + 0.1 / dt) if self.fps and dt > 0 else (1.0 / dt if dt > 0 else 0.0)
            self.frame_ms = 0.9 * self.frame_ms + 0.1 * _ms(t0) if self.frame_ms else _ms(t0)
            self.latency_ms = (now - frame.timestamp) * 1000.0
