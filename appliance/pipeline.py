"""One frame's journey: segment -> refine -> composite -> encode, synchronously or on threads."""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from appliance import adjust, controls
from appliance.compose import MASKED_EFFECTS, Compositor, Masks, mirror
from appliance.encode import encoder_for
from appliance.frame import Frame, split_i420
from appliance.framing import Crop, Framer, SensorCrop, crop_i420, crop_mask, manual_crop
from appliance.refine import MaskRefiner, guided_upsample, half_size
from appliance.segment import Segmenter, load_segmenter, model_for
from appliance.settings import Settings
from appliance.stream import FrameSlot, StreamFormat

log = logging.getLogger(__name__)

# Effects that need the person's outline; the others never run the model.


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
    """The processing stages, configured from Settings.

    The stages are split where the threaded runner splits them: `predict` (the model, one
    interpreter per calling thread), then `refine` (stateful: called once per frame, in frame
    order) and `finish` (controls, upsampling, the effect). `process` runs all three in a row.
    """

    def __init__(self, settings: Settings, background_rgb: np.ndarray | None = None):
        self.settings = settings
        # Image controls the camera applies itself; the rest are done here in software.
        self.hardware_controls: frozenset[str] = frozenset()
        # A camera that crops on the sensor for auto-framing (None: crop in software).
        self.sensor_crop: SensorCrop | None = None
        self.refiner = MaskRefiner()
        self.compositor = Compositor()
        self.compositor.set_background(background_rgb)
        self._segmenter: Segmenter | None = None
        self._segmenter_key: tuple | None = None
        # Interpreters of earlier runs' model workers, ready for the next run (see take_segmenter).
        self._spare_segmenters: list[tuple[tuple, Segmenter]] = []
        self._spare_lock = threading.Lock()
        # The size of the frames to come: the "auto" model choice depends on it.
        self.frame_size: tuple[int, int] | None = None
        self._framer: Framer | None = None

    def configure(self, settings: Settings, background_rgb: np.ndarray | None = None,
                  background_changed: bool = False) -> None:
        """Apply new settings from the next frame on (a model change reloads lazily)."""
        self.settings = settings
        if background_changed:
            self.compositor.set_background(background_rgb)

    @property
    def model_key(self) -> tuple[str, str, int]:
        """What identifies the model the settings ask for, for frames of `frame_size`:
        (model file name, precision, threads)."""
        s = self.settings
        name = model_for(s.model, *self.frame_size) if self.frame_size else model_for(s.model, 4, 3)
        return name, s.precision, s.inference_threads

    def lores_size_for(self, width: int, height: int) -> tuple[int, int]:
        """Set the size of the frames to come; the (width, height) of the image the model wants."""
        self.frame_size = (width, height)
        return self.lores_size

    @property
    def segmenter(self) -> Segmenter:
        """This pipeline's own interpreter (for `process`); threads that run the model in
        parallel take their own with `take_segmenter(model_key)`."""
        key = self.model_key
        if self._segmenter is None or self._segmenter_key != key:
            self._segmenter = load_segmenter(*key)
            self._segmenter_key = key
            self.refiner.reset()
        return self._segmenter

    def take_segmenter(self, key: tuple[str, str, int]) -> Segmenter:
        """An interpreter of model `key` for one model worker, used by that thread alone until it
        gives it back: one kept from an earlier run, or a new one. Loading a model holds the GIL
        throughout (tens of ms on a Pi, seconds under emulation), which would stall every other
        thread of the daemon, the UVC event thread answering the host too, at each stream start."""
        with self._spare_lock:
            for i, (spare_key, segmenter) in enumerate(self._spare_segmenters):
                if spare_key == key:
                    del self._spare_segmenters[i]
                    return segmenter
        return load_segmenter(*key)

    def give_back_segmenter(self, key: tuple[str, str, int], segmenter: Segmenter) -> None:
        """Keep a worker's interpreter for the next run (those of another model are dropped)."""
        with self._spare_lock:
            self._spare_segmenters = [(k, s) for k, s in self._spare_segmenters if k == key]
            self._spare_segmenters.append((key, segmenter))
            del self._spare_segmenters[:-MAX_SPARE_SEGMENTERS]

    @property
    def lores_size(self) -> tuple[int, int]:
        return self.segmenter.input_size

    @property
    def needs_mask(self) -> bool:
        """Whether frames need the model: for the effect, or to know where to frame."""
        return self.settings.effect in MASKED_EFFECTS or self.settings.framing == "auto"

    def predict(self, frame: Frame, segmenter: Segmenter | None = None,
                timings: dict[str, float] | None = None) -> np.ndarray:
        """The model's person probability for a frame (model resolution, float32)."""
        timings = {} if timings is None else timings
        seg = segmenter or self.segmenter
        t = time.perf_counter()
        tensor = seg.preprocess(frame.lores)
        timings["preprocess"] = _ms(t)
        t = time.perf_counter()
        prob = seg.infer(tensor)
        timings["inference"] = _ms(t)
        return prob

    def refine(self, prob: np.ndarray, timings: dict[str, float] | None = None) -> np.ndarray:
        """Probability -> the steady, soft-edged alpha at model resolution. Keeps temporal state:
        call once per frame, in frame order."""
        timings = {} if timings is None else timings
        s = self.settings
        t = time.perf_counter()
        alpha = self.refiner.refine_low(prob, s.mask_threshold, s.edge_softness, s.temporal_smoothing)
        timings["refine"] = timings.get("refine", 0.0) + _ms(t)
        return alpha.copy()

    def segment(self, frame: Frame, timings: dict[str, float] | None = None) -> np.ndarray:
        """The refined low-resolution alpha for a frame."""
        timings = {} if timings is None else timings
        return self.refine(self.predict(frame, timings=timings), timings)

    def reframe(self, frame: Frame, alpha_low: np.ndarray | None, at: float | None = None,
                timings: dict[str, float] | None = None, still: bool = False) -> tuple[Frame, np.ndarray | None]:
        """The part of the frame to show, and the mask cut the same way, so the effect lines up
        with the cropped picture: auto-framing's virtual camera, or (framing off) the crop the
        Zoom and Pan/Tilt controls ask for. Stateful like `refine`: call once per frame, in frame
        order; `at` is the frame's time (default its capture time). A `still` picture is framed
        at once, where the camera would come to rest.

        With a camera that crops on the sensor, the frame already shows the crop chosen a few
        frames earlier (`frame.view`) and so does its mask: the new crop goes to the camera and
        the frame passes through untouched."""
        s = self.settings
        sensor = self.sensor_crop
        sensor_canvas = sensor.crop_canvas if sensor is not None else None
        if sensor_canvas is None:
            sensor = None  # a camera that cannot crop on its sensor (now): crop in software
        canvas = sensor_canvas or (frame.width, frame.height)
        t = time.perf_counter()
        if s.framing == "auto":
            if self._framer is None or self._framer.canvas != canvas:
                self._framer = Framer(canvas, s.framing_zoom, s.framing_speed)
            self._framer.configure(s.framing_zoom, s.framing_speed)
            shown = Crop(*frame.view) if sensor is not None and frame.view else None
            if still and alpha_low is not None:
                crop = self._framer.rest_on(alpha_low, shown)
            else:
                crop = self._framer.update(alpha_low, frame.timestamp if at is None else at, shown)
        else:
            self._framer = None
            crop = manual_crop(canvas, s.zoom, s.pan, s.tilt, controls.BY_NAME["pan"].maximum)
        if sensor is not None:
            sensor.set_crop(crop)  # shows from a few frames on; this frame shows frame.view
            framed = frame
        elif (crop.w, crop.h) == canvas:
            return frame, alpha_low  # the whole picture: nothing to do
        else:
            framed = replace(frame, yuv=crop_i420(frame.yuv, crop), view=(crop.x, crop.y, crop.w, crop.h))
            alpha_low = None if alpha_low is None else crop_mask(alpha_low, crop, canvas)
        if timings is not None:
            timings["framing"] = _ms(t)
        return framed, alpha_low

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
        effect, masks = s.effect, None
        if effect in MASKED_EFFECTS:
            if alpha_low is None:
                # The effect was switched on after this frame was let in without a mask (the
                # settings changed between the two reads): it leaves as the frames before it did.
                effect = "none"
            else:
                luma_half = half_size(split_i420(yuv)[0])
                alpha_full, alpha_half = guided_upsample(alpha_low, luma_half, (frame.width, frame.height))
                masks = Masks(alpha_low, alpha_full, alpha_half, luma_half)
        timings["refine"] = timings.get("refine", 0.0) + _ms(t)
        t = time.perf_counter()
        out = self.compositor.compose(yuv, effect, masks, blur_strength=s.blur_strength,
                                      privacy_text=s.privacy_text)
        if s.mirror and s.effect != "privacy":
            out = mirror(out)
        timings["composite"] = _ms(t)
        return out

    def process(self, frame: Frame, at: float | None = None, still: bool = False) -> Processed:
        """One frame through every stage. `at`: its time in the stream (default its capture
        time); `still`: it is a photo, not part of a stream."""
        timings: dict[str, float] = {}
        self.frame_size = (frame.width, frame.height)
        alpha = self.segment(frame, timings) if self.needs_mask else None
        frame, alpha = self.reframe(frame, alpha, at, timings, still)
        out = self.finish(frame, alpha, timings)
        return Processed(frame, out, alpha, timings)


@dataclass(frozen=True)
class LiveStats:
    """What the running pipeline delivers, for status pages and benchmarks."""

    fps: float                        # output frames per second over the last seconds (0 on a stall)
    latency_p50_ms: float | None      # capture -> encoded output, recent frames
    latency_p95_ms: float | None
    mask_age_frames: int | None       # frames between the mask's own frame and the frame it was applied to
    mask_age_ms: float | None
    frames_out: int
    frames_dropped: int               # captured but never composited (the CPU could not keep up)
    inference_ms: float | None        # one model run, recent average
    segment_workers: int              # model interpreters running in parallel

    def as_status(self) -> dict:
        """The live figures as status fields (the output rate is the status's `fps`)."""
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)
        return {"latency_p50_ms": r(self.latency_p50_ms), "latency_p95_ms": r(self.latency_p95_ms),
                "mask_age_frames": self.mask_age_frames, "mask_age_ms": r(self.mask_age_ms),
                "frames_out": self.frames_out, "frames_dropped": self.frames_dropped,
                "segment_workers": self.segment_workers}


IDLE_STATUS = {"latency_p50_ms": None, "latency_p95_ms": None, "mask_age_frames": None,
               "mask_age_ms": None, "frames_out": 0, "frames_dropped": 0, "segment_workers": 0}


MAX_SPARE_SEGMENTERS = 3  # interpreters kept between runs: as many as default_segment_workers gives


def default_segment_workers() -> int:
    """One model interpreter per core, leaving a core for compose/encode; at least one, at most 3
    (more only adds memory: compose is the limit by then)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(3, cores - 1))


class _Ticket:
    """One admitted frame on its way through the threads; `done` is set once its model output is
    there (at once when no mask is needed)."""

    __slots__ = ("frame", "prob", "mask_of", "segmented", "done")

    def __init__(self, frame: Frame, segmented: bool):
        self.frame = frame
        self.segmented = segmented
        self.prob: np.ndarray | None = None
        self.mask_of: Frame | None = None  # the frame the model saw for `prob`
        self.done = threading.Event()
        if not segmented:
            self.done.set()


def _percentile(values, q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


class ThreadedPipeline:
    """Capture, model workers and compose+encode on their own threads; every frame that leaves
    is composited with the mask made from that very frame.

    Capture admits a frame only while a model worker is free for it and fewer than `window`
    frames are in flight, and drops it otherwise: when the CPU cannot keep up, frames are dropped
    at the door, before any work is spent on them, so the output rate drops evenly and the latency
    stays bounded (no frame queues for the model). Admitted frames go to the model workers (each
    with its own interpreter, so several cores run the model at once) and, in capture order, to
    compose, which waits for each frame's own model output, refines it (the temporal filter sees
    the frames in order) and sends the result. Frames leave in order.
    """

    def __init__(self, source, fmt: StreamFormat, pipeline: FramePipeline, slot: FrameSlot,
                 fault: str = "", segment_workers: int | None = None, window: int | None = None,
                 on_output: Callable[[Processed], None] | None = None):
        self.source, self.fmt, self.pipeline, self.slot = source, fmt, pipeline, slot
        self._fault = fault
        self.segment_workers = segment_workers or default_segment_workers()
        # Enough frames in flight to keep every worker and compose busy, no more (latency).
        self.window = window or self.segment_workers + 1
        self._on_output = on_output  # called with each Processed (tests, selftest)
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight = threading.BoundedSemaphore(self.window)
        self._segmenting = 0  # admitted frames waiting for or in the model
        self._jobs: queue.Queue[_Ticket] = queue.Queue()
        self._ordered: queue.Queue[_Ticket] = queue.Queue()
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=150)
        self._out_times: collections.deque[float] = collections.deque(maxlen=90)
        self._mask_age: tuple[int, float] | None = None
        self.heartbeat: dict[str, float] = {}
        self.error: BaseException | None = None
        self.frames_out = 0
        self.frames_dropped = 0
        self.inference_ms = 0.0
        self.frame_ms = 0.0
        self.latency_ms = 0.0
        self.last_output_at = 0.0  # time.monotonic() of the newest frame out
        self.latest: Processed | None = None

    @property
    def thread_names(self) -> list[str]:
        workers = ["segment"] + [f"segment-{i + 1}" for i in range(1, self.segment_workers)]
        return ["capture", *workers, "compose"]

    def start(self) -> None:
        # One OpenCV thread per call (process-wide): the pipeline's own threads are the parallelism.
        # OpenCV's pool on top only adds hand-over work: measured under a 0.5-CPU budget at 720p,
        # 12 % more CPU per frame and 26 instead of 30 frames per second.
        cv2.setNumThreads(1)
        lores_size = self.pipeline.lores_size_for(self.fmt.width, self.fmt.height)
        self.source.start(self.fmt.width, self.fmt.height, self.fmt.fps, lores_size)
        self.pipeline.hardware_controls = frozenset(getattr(self.source, "hardware_controls", ()))
        crop_canvas = getattr(self.source, "crop_canvas", None)
        self.pipeline.sensor_crop = self.source if crop_canvas else None
        self._running.set()
        now = time.monotonic()
        for name in self.thread_names:
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

    @property
    def fps(self) -> float:
        """Output frames per second over the recent frames."""
        with self._lock:
            times = list(self._out_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def current_fps(self, stale_after: float = 1.0) -> float:
        """The output rate, or 0 once no frame has left for `stale_after` seconds (a stall)."""
        return self.fps if time.monotonic() - self.last_output_at < stale_after else 0.0

    def stats(self) -> LiveStats:
        with self._lock:
            latencies = list(self._latencies)
            age = self._mask_age
        return LiveStats(
            fps=self.current_fps(), latency_p50_ms=_percentile(latencies, 50),
            latency_p95_ms=_percentile(latencies, 95),
            mask_age_frames=age[0] if age else None, mask_age_ms=age[1] if age else None,
            frames_out=self.frames_out, frames_dropped=self.frames_dropped,
            inference_ms=self.inference_ms or None, segment_workers=self.segment_workers)

    # --- the threads ------------------------------------------------------------------------
    def _guard(self, name: str) -> None:
        loop = name.split("-")[0]
        try:
            getattr(self, f"_{loop}_loop")(name)
        except BaseException as exc:  # a dead worker must be visible, not silent
            log.error("%s thread failed: %s", name, exc, exc_info=not isinstance(exc, RuntimeError))
            self.error = exc
            self._running.clear()

    def _beat(self, name: str) -> None:
        self.heartbeat[name] = time.monotonic()

    def _count_drop(self) -> None:
        with self._lock:
            self.frames_dropped += 1

    def _maybe_stall(self, name: str, iterations: int) -> None:
        """Fault injection for the watchdog tests: BLURCAM_FAULT=stall-<loop> (stall-work-loop
        is the compose loop) makes that loop hang after its first iterations."""
        wanted = {"stall-work-loop": "compose"}.get(self._fault, self._fault.removeprefix("stall-"))
        if self._fault and name == wanted and iterations > 30:
            log.warning("fault injection: %s loop stalls now", name)
            threading.Event().wait()

    def _capture_loop(self, name: str) -> None:
        iterations = 0
        while self._running.is_set():
            frame = self.source.read()
            self._beat(name)
            iterations += 1
            self._maybe_stall(name, iterations)
            needs_mask = self.pipeline.needs_mask
            # Admit a frame only if a model worker is free for it and compose is not too far
            # behind; otherwise drop it here, before any work is spent on it.
            if (needs_mask and self._segmenting >= self.segment_workers) or not self._in_flight.acquire(blocking=False):
                self._count_drop()
                continue
            ticket = _Ticket(frame, segmented=needs_mask)
            if needs_mask:
                with self._lock:
                    self._segmenting += 1
                self._jobs.put(ticket)
            self._ordered.put(ticket)

    def _segment_loop(self, name: str) -> None:
        segmenter: Segmenter | None = None
        key: tuple[str, str, int] | None = None
        iterations = 0
        while self._running.is_set():
            self._beat(name)
            try:
                ticket = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            iterations += 1
            self._maybe_stall("segment", iterations)
            if segmenter is None or key != self.pipeline.model_key:
                if segmenter is not None and key is not None:
                    self.pipeline.give_back_segmenter(key, segmenter)
                key = self.pipeline.model_key
                segmenter = self.pipeline.take_segmenter(key)  # this thread's alone until given back
            timings: dict[str, float] = {}
            try:
                ticket.prob = self.pipeline.predict(ticket.frame, segmenter, timings)
                ticket.mask_of = ticket.frame
            finally:
                with self._lock:
                    self._segmenting -= 1
                ticket.done.set()  # compose must never wait for a mask that will not come
            ms = timings["inference"]
            self.inference_ms = 0.9 * self.inference_ms + 0.1 * ms if self.inference_ms else ms
        if segmenter is not None and key is not None:  # a clean stop: the next run takes it over
            self.pipeline.give_back_segmenter(key, segmenter)

    def _compose_loop(self, name: str) -> None:
        encoder_quality = None
        encoder = None
        iterations = 0
        while self._running.is_set():
            self._beat(name)
            iterations += 1
            self._maybe_stall(name, iterations)
            try:
                ticket = self._ordered.get(timeout=0.2)
            except queue.Empty:
                continue
            while not ticket.done.wait(0.2):  # this frame's own mask, however long the model takes
                self._beat(name)
                if not self._running.is_set():
                    return
            q = self.pipeline.settings.jpeg_quality
            if encoder is None or q != encoder_quality:
                encoder, encoder_quality = encoder_for(self.fmt, q), q
            try:
                self._compose_one(ticket, encoder)
            finally:
                self._in_flight.release()

    def _compose_one(self, ticket: _Ticket, encoder) -> None:
        frame = ticket.frame
        t0 = time.perf_counter()
        alpha = None
        if self.pipeline.needs_mask:
            if ticket.prob is None:
                if ticket.segmented:  # the model failed on it: the worker reports the error
                    return
                # Admitted just before the effect needed a mask: this frame has none of its own.
                self._count_drop()
                return
            alpha = self.pipeline.refine(ticket.prob)
        frame, alpha = self.pipeline.reframe(frame, alpha)
        out = self.pipeline.finish(frame, alpha)
        processed = Processed(frame, out, alpha)
        # `latest` first: whoever the slot wakes finds this frame's preview already there.
        self.latest = processed
        self.slot.put(encoder.encode(out))
        now = time.monotonic()
        self.last_output_at = now
        self.frames_out += 1
        latency = (now - frame.timestamp) * 1000.0
        self.latency_ms = latency
        self.frame_ms = 0.9 * self.frame_ms + 0.1 * _ms(t0) if self.frame_ms else _ms(t0)
        with self._lock:
            self._latencies.append(latency)
            self._out_times.append(now)
            source = ticket.mask_of
            self._mask_age = None if alpha is None or source is None else (
                frame.sequence - source.sequence, (frame.timestamp - source.timestamp) * 1000.0)
        if self._on_output is not None:
            self._on_output(processed)
