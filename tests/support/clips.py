"""Short video files with sound for `blurcam process` tests, written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TONE_HZ = 440.0


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    """A 440 Hz sine, float32 planar (channels, samples)."""
    t = np.arange(round(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)[None], channels, axis=0)


def make_clip(path: Path, frames: list[np.ndarray], fps: int = 10, video_codec: str = "mpeg4",
              audio_codec: str | None = "aac", channels: int = 2, audio_rate: int = 44100) -> Path:
    """Write RGB `frames` (all one size) as a video at `fps`, with a tone as long as the video."""
    import av
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if audio_codec:
            layout = "mono" if channels == 1 else "stereo"
            audio = out.add_stream(audio_codec, rate=audio_rate, layout=layout)
        for rgb in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        out.mux(video.encode(None))
        if audio is not None:
            sound = av.AudioFrame.from_ndarray(tone(len(frames) / fps, audio_rate, channels),
                                               format="fltp", layout=audio.layout.name)
            sound.sample_rate = audio_rate
            resampler = av.AudioResampler(format=audio.format.name, layout=audio.layout.name, rate=audio_rate)
            for ready in resampler.resample(sound) + resampler.resample(None):
                out.mux(audio.encode(ready))
            out.mux(audio.encode(None))
    return path


def audio_packets(path: Path) -> list[bytes]:
    import av
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream as mono float32 samples, and its sample rate."""
    import av
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.codec_context.sample_rate)
        chunks = [r.to_ndarray().reshape(-1) for f in container.decode(stream) for r in resampler.resample(f)]
        return np.concatenate(chunks), stream.codec_context.sample_rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def video_info(path: Path) -> dict:
    import av
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        return {"codec": video.codec_context.name, "pix_fmt": video.codec_context.pix_fmt,
                "profile": video.codec_context.profile, "frames": frames,
                "audio": [s.codec_context.name for s in container.streams.audio]}
