"""`blurcam process`: the camera pipeline on an image or a video file."""

from __future__ import annotations

from pathlib import Path

import cv2

from appliance.frame import i420_to_rgb
from appliance.pipeline import FramePipeline
from appliance.settings import validate
from appliance.sources.base import SourceError
from appliance.sources.file import FileSource, is_image_path, read_image

VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".mov": "mp4v"}


class ProcessError(RuntimeError):
    """Bad arguments or files for `blurcam process` (one line, for the user)."""


def process_file(input_path: str, output_path: str, settings_values: dict,
                 background: str | None = None) -> int:
    """Process `input_path` into `output_path`; returns the number of frames written."""
    out = Path(output_path)
    input_is_image = is_image_path(input_path)
    if input_is_image and not is_image_path(out):
        raise ProcessError(f"output {out} must be an image file ({', '.join(sorted({'.jpg', '.png', '.bmp', '.webp'}))}) for an image input")
    if not input_is_image and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ProcessError(f"output {out} must be a video file ({', '.join(VIDEO_SUFFIXES)}) for a video input")
    if not out.parent.exists():
        raise ProcessError(f"output directory {out.parent} does not exist")
    settings = validate(settings_values)
    bg = read_image(background) if background else None
    if settings.effect == "replace" and bg is None:
        raise ProcessError("--effect replace needs --background IMAGE")

    source = FileSource(input_path, loop=False, paced=False)
    w, h = source.native_size
    w, h = w & ~1, h & ~1  # I420 needs even sides
    pipeline = FramePipeline(settings, bg)
    source.start(w, h, source.native_fps, pipeline.lores_size_for(w, h))
    writer = None
    frames = 0
    try:
        while True:
            try:
                frame = source.read()
            except EOFError:
                break
            # The video's own clock (not the wall clock) paces auto-framing, however fast we go.
            processed = pipeline.process(frame, at=frames / source.native_fps, still=input_is_image)
            rgb = i420_to_rgb(processed.yuv)
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            frames += 1
            if input_is_image:
                if not cv2.imwrite(str(out), bgr):
                    raise ProcessError(f"cannot write {out}")
                break
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[out.suffix.lower()])
                writer = cv2.VideoWriter(str(out), fourcc, source.native_fps, (w, h))
                if not writer.isOpened():
                    raise ProcessError(f"cannot write video {out}")
            writer.write(bgr)
    finally:
        source.stop()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise SourceError(f"{input_path} has no frames")
    return frames
