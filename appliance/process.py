"""`blurcam process`: the camera pipeline on an image or a video file.

Videos go through PyAV (FFmpeg's libraries): every video frame is decoded, processed with its
own mask and encoded as H.264 (yuv420p, the profile every browser plays) at the input's
timestamps; the input's audio streams are copied as they are, or re-encoded to AAC where the
output container cannot carry them. MP4 and MOV outputs get their index at the front
(+faststart), so a browser starts playing before the whole file has loaded.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from appliance.frame import frame_from_rgb, i420_to_rgb
from appliance.pipeline import FramePipeline
from appliance.settings import validate
from appliance.sources.base import SourceError
from appliance.sources.file import is_image_path, read_image

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
IMAGE_OUTPUTS = (".jpg", ".png", ".bmp", ".webp")
H264_OPTIONS = {"crf": "20", "preset": "veryfast"}
# Audio codecs MP4/MOV/MKV carry as they are; anything else (PCM, Vorbis, ...) becomes AAC.
AUDIO_COPY = {".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
              ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
              ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"},
              ".mkv": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "vorbis", "pcm_s16le"}}


class ProcessError(RuntimeError):
    """Bad arguments or files for `blurcam process` (one line, for the user)."""


class Progress:
    """Frames, frames per second and time left: a bar redrawn in place on a terminal, a plain
    line every few seconds otherwise (a log, a pipe)."""

    def __init__(self, total: int | None, out: TextIO = sys.stderr, every_s: float | None = None,
                 clock=time.monotonic):
        self.total = total if total and total > 0 else None
        self.out, self.clock = out, clock
        self.tty = out.isatty()
        self.every_s = every_s if every_s is not None else (0.1 if self.tty else 5.0)
        self.started = self.last = clock()
        self.done = 0

    def _line(self) -> str:
        elapsed = max(1e-6, self.clock() - self.started)
        fps = self.done / elapsed
        if self.total is None:
            return f"{self.done} frames, {fps:.1f} fps"
        share = min(1.0, self.done / self.total)
        left = (self.total - self.done) / fps if fps > 0 else 0.0
        eta = f"ETA {int(left // 60)}:{int(left % 60):02d}"
        if self.tty:
            filled = round(share * 30)
            bar = "█" * filled + "░" * (30 - filled)
            return f"{self.done}/{self.total} frames ▕{bar}▏ {share:4.0%}  {fps:.1f} fps  {eta}"
        return f"{self.done}/{self.total} frames ({share:.0%}), {fps:.1f} fps, {eta}"

    def update(self, frames: int = 1) -> None:
        self.done += frames
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self._show()

    def _show(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self._line())
        else:
            self.out.write(self._line() + "\n")
        self.out.flush()

    def finish(self) -> None:
        self._show()
        if self.tty:
            self.out.write("\n")
            self.out.flush()


def check_paths(input_path: str, output_path: str) -> bool:
    """ProcessError for outputs that cannot work; True when the input is an image."""
    inp, out = Path(input_path), Path(output_path)
    if not inp.is_file():
        raise ProcessError(f"input file {inp} does not exist")
    if out.resolve() == inp.resolve() or (out.exists() and os.path.samefile(out, inp)):
        raise ProcessError(f"output {out} is the input file; write the result to another file")
    input_is_image = is_image_path(inp)
    suffix = out.suffix.lower()
    if input_is_image and suffix not in IMAGE_OUTPUTS:
        raise ProcessError(f"output {out} must be an image file ({', '.join(IMAGE_OUTPUTS)}) for an image input")
    if not input_is_image and suffix not in VIDEO_SUFFIXES:
        raise ProcessError(f"output {out} must be a video file ({', '.join(VIDEO_SUFFIXES)}) for a video input")
    if not out.parent.exists():
        raise ProcessError(f"output directory {out.parent} does not exist")
    return input_is_image


def process_file(input_path: str, output_path: str, settings_values: dict,
                 background: str | None = None, progress_out: TextIO | None = sys.stderr) -> int:
    """Process `input_path` into `output_path`; returns the number of frames written."""
    input_is_image = check_paths(input_path, output_path)
    settings = validate(settings_values)
    bg = read_image(background) if background else None
    if settings.effect == "replace" and bg is None:
        raise ProcessError("--effect replace needs --background IMAGE")
    pipeline = FramePipeline(settings, bg)
    if input_is_image:
        return _process_image(Path(input_path), Path(output_path), pipeline)
    return _process_video(Path(input_path), Path(output_path), pipeline, progress_out)


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[: h & ~1, : w & ~1]  # I420 needs even sides


def _process_image(inp: Path, out: Path, pipeline: FramePipeline) -> int:
    rgb = _even(read_image(inp))
    h, w = rgb.shape[:2]
    frame = frame_from_rgb(rgb, pipeline.lores_size_for(w, h), time.monotonic(), 1)
    result = pipeline.process(frame, still=True)  # auto-framing goes straight to where it would rest
    if not cv2.imwrite(str(out), cv2.cvtColor(i420_to_rgb(result.yuv), cv2.COLOR_RGB2BGR)):
        raise ProcessError(f"cannot write {out}")
    return 1


def _open_video(inp: Path):
    try:
        import av
    except ImportError:
        raise ProcessError("processing videos needs PyAV (pip install av, or Debian's python3-av)") from None
    try:
        container = av.open(str(inp))
    except (av.error.FFmpegError, OSError):
        raise SourceError(f"{inp} is not a readable image or video") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{inp} has no video stream")
    return av, container


def _process_video(inp: Path, out: Path, pipeline: FramePipeline, progress_out: TextIO | None) -> int:
    av, source = _open_video(inp)
    video = source.streams.video[0]
    w, h = (video.codec_context.width & ~1), (video.codec_context.height & ~1)
    rate = video.average_rate or video.guessed_rate or 30
    total = video.frames or (round(float(source.duration / 1e6 * rate)) if source.duration else None)
    options = {"movflags": "+faststart"} if out.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
    try:
        output = av.open(str(out), "w", options=options)
    except (av.error.FFmpegError, OSError) as exc:
        source.close()
        raise ProcessError(f"cannot write video {out} ({exc})") from None
    frames = 0
    try:
        try:
            encoder = output.add_stream("libx264", rate=rate, options=H264_OPTIONS)
        except (av.error.FFmpegError, ValueError) as exc:
            raise ProcessError(f"this FFmpeg build cannot encode H.264 ({exc})") from None
        encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuv420p"
        encoder.time_base = video.time_base
        audio = {stream: AudioOut(av, output, stream, out.suffix.lower()) for stream in source.streams.audio}
        progress = Progress(total, progress_out) if progress_out is not None else None
        for packet in source.demux(video, *audio):
            if packet.stream is not video:
                audio[packet.stream].add(packet)
                continue
            for frame in packet.decode():
                rgb = np.ascontiguousarray(frame.to_ndarray(format="rgb24")[:h, :w])
                pts = frame.pts if frame.pts is not None else round(frames / rate / video.time_base)
                seconds = float(pts * video.time_base)
                # The video's own clock (not the wall clock) paces auto-framing, however fast we go.
                result = pipeline.process(frame_from_rgb(rgb, pipeline.lores_size_for(w, h), seconds, frames + 1),
                                          at=seconds)
                # Our I420 is full range; the encoder gets standard (limited range) BT.601 from swscale.
                picture = av.VideoFrame.from_ndarray(i420_to_rgb(result.yuv), format="rgb24")
                picture = picture.reformat(format="yuv420p")
                picture.pts, picture.time_base = pts, video.time_base
                output.mux(encoder.encode(picture))
                frames += 1
                if progress:
                    progress.update()
        for track in audio.values():
            track.flush()
        output.mux(encoder.encode(None))
        if progress:
            progress.finish()
    except BaseException:
        output.close()
        source.close()
        out.unlink(missing_ok=True)  # never leave a half-written video behind
        raise
    output.close()
    source.close()
    if frames == 0:
        out.unlink(missing_ok=True)
        raise SourceError(f"{inp} has no frames")
    return frames


class AudioOut:
    """One input audio stream in the output: its packets copied, or re-encoded to AAC where the
    output container cannot carry the codec."""

    def __init__(self, av, output, stream, suffix: str):
        self.output = output
        # (AAC encoder, resampler into its sample format) when the codec cannot be copied
        self.reencode: tuple[Any, Any] | None = None
        if stream.codec_context.name in AUDIO_COPY[suffix]:
            add = getattr(output, "add_stream_from_template", None)  # PyAV >= 13
            self.stream = add(stream) if add else output.add_stream(template=stream)
            return
        rate = stream.codec_context.sample_rate or 48000
        # Mono stays mono; anything else becomes stereo (what every player takes).
        layout = "mono" if stream.codec_context.channels == 1 else "stereo"
        self.stream = output.add_stream("aac", rate=rate, layout=layout)
        self.reencode = (self.stream, av.AudioResampler(format="fltp", layout=layout, rate=rate))

    def add(self, packet) -> None:
        if self.reencode is None:
            if packet.dts is not None:  # not the demuxer's empty flush packet
                packet.stream = self.stream
                self.output.mux(packet)
            return
        encoder, resampler = self.reencode
        for frame in packet.decode():
            frame.pts = None  # the resampler and encoder count samples themselves
            for ready in resampler.resample(frame):
                self.output.mux(encoder.encode(ready))

    def flush(self) -> None:
        if self.reencode is not None:
            encoder, resampler = self.reencode
            for ready in resampler.resample(None):
                self.output.mux(encoder.encode(ready))
            self.output.mux(encoder.encode(None))
