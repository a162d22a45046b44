"""`blurcam process`: the camera pipeline on the user's own photos and videos."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from appliance.frame import i420_to_rgb, rgb_to_i420

from tests.support.scenes import background_box, face_box


def blurcam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=120)


def detail(rgb: np.ndarray) -> float:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(gray, cv2.CV_32F)).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture
def portrait_file(tmp_path, portrait):
    rgb, truth = portrait
    path = tmp_path / "portrait.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path, rgb, truth


def test_blur_removes_background_detail_and_leaves_the_face_untouched(portrait_file, tmp_path):
    path, rgb, truth = portrait_file
    out_path = tmp_path / "out.png"
    result = blurcam("process", str(path), str(out_path), "--blur-strength", "60")
    assert result.returncode == 0, result.stderr
    out = read_rgb(out_path)
    assert out.shape == rgb.shape
    bg, face = background_box(truth), face_box(truth)
    assert detail(out[bg]) < 0.15 * detail(rgb[bg])  # the bookshelf's edges are gone
    assert psnr(out[face], rgb[face]) > 35  # the face is as it was (only I420 chroma rounding)


def test_stronger_blur_removes_more_detail(portrait_file, tmp_path):
    path, rgb, truth = portrait_file
    details = []
    for strength in ("10", "90"):
        out_path = tmp_path / f"out{strength}.png"
        assert blurcam("process", str(path), str(out_path), "--blur-strength", strength).returncode == 0
        details.append(detail(read_rgb(out_path)[background_box(truth)]))
    assert details[1] < 0.7 * details[0]


def test_replace_puts_the_given_image_behind_the_person(portrait_file, tmp_path):
    path, rgb, truth = portrait_file
    backdrop = np.zeros((400, 600, 3), np.uint8)
    backdrop[:] = (30, 160, 90)  # a green studio wall
    bg_path = tmp_path / "wall.jpg"
    cv2.imwrite(str(bg_path), cv2.cvtColor(backdrop, cv2.COLOR_RGB2BGR))
    out_path = tmp_path / "out.png"
    result = blurcam("process", str(path), str(out_path), "--effect", "replace", "--background", str(bg_path))
    assert result.returncode == 0, result.stderr
    out = read_rgb(out_path)
    patch = out[background_box(truth)].reshape(-1, 3).astype(int)
    assert np.abs(patch.mean(axis=0) - (30, 160, 90)).max() < 6
    face = face_box(truth)
    assert psnr(out[face], rgb[face]) > 35


def test_none_returns_the_input_as_the_camera_format_carries_it(portrait_file, tmp_path):
    path, rgb, _ = portrait_file
    out_path = tmp_path / "out.png"
    assert blurcam("process", str(path), str(out_path), "--effect", "none").returncode == 0
    out = read_rgb(out_path)
    # Frames travel as I420 (4:2:0 chroma, like every webcam); apart from that, nothing changes.
    assert psnr(out, i420_to_rgb(rgb_to_i420(rgb))) > 50
    assert psnr(out, rgb) > 30


def test_a_video_is_processed_frame_by_frame(tmp_path, portrait):
    rgb, _ = portrait
    small = cv2.resize(rgb, (320, 180))
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
    for i in range(8):
        writer.write(cv2.cvtColor(np.roll(small, i * 4, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out.avi"
    result = blurcam("process", str(src), str(out))
    assert result.returncode == 0, result.stderr
    assert "8 frames" in result.stdout
    cap = cv2.VideoCapture(str(out))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    assert frames == 8 and ok and first.shape == (180, 320, 3)


@pytest.mark.parametrize("args, message", [
    (["process", "{missing}", "{out}"], "does not exist"),
    (["process", "{notimage}", "{out}"], "is not a readable image"),
    (["process", "{portrait}", "{out}", "--effect", "sparkle"], "effect"),
    (["process", "{portrait}", "{out}", "--blur-strength", "150"], "blur_strength"),
    (["process", "{portrait}", "{out}", "--blur-strength", "0"], "allowed range 1..100"),
    (["process", "{portrait}", "{out}", "--effect", "replace", "--background", "{notimage}"], "not a readable image"),
    (["process", "{portrait}", "{out}", "--effect", "replace"], "needs --background"),
    (["process", "{portrait}", "{tmp}/no/such/dir/out.png"], "does not exist"),
])
def test_bad_input_gives_one_clear_line_and_a_nonzero_exit(args, message, portrait_file, tmp_path):
    path, _, _ = portrait_file
    notimage = tmp_path / "notes.jpg"
    notimage.write_text("this is not a picture")
    names = {"missing": str(tmp_path / "absent.jpg"), "notimage": str(notimage), "portrait": str(path),
             "out": str(tmp_path / "out.png"), "tmp": str(tmp_path)}
    result = blurcam(*[a.format(**names) for a in args])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "out.png").exists()


# -- auto-framing offline ------------------------------------------------------------------------
def faces(rgb: np.ndarray) -> np.ndarray:
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return detector.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(30, 30))


def test_framing_auto_on_a_photo_frames_head_and_shoulders(portrait_file, tmp_path):
    path, rgb, _ = portrait_file
    out = tmp_path / "framed.png"
    result = blurcam("process", str(path), str(out), "--effect", "none", "--framing", "auto")
    assert result.returncode == 0, result.stderr
    framed = read_rgb(out)
    assert framed.shape == rgb.shape
    (_, _, before, _), (fx, fy, after, _) = faces(rgb)[0], faces(framed)[0]
    assert after >= 1.3 * before, "the face fills more of the picture"
    assert 0.25 * 1280 < fx + after / 2 < 0.75 * 1280 and fy + after / 2 < 0.6 * 720


def test_framing_auto_on_a_video_follows_the_video_clock(tmp_path):
    """The person walks and sits; processing runs much faster than real time, yet the camera
    moves as it would have live: the same frames as the live pipeline fed at the video's rate."""
    from appliance.frame import frame_from_rgb
    from appliance.pipeline import FramePipeline
    from appliance.settings import Settings
    from tests.support.walking_clip import walking_clip

    fps = 10
    clip = [cf for cf in walking_clip(320, 180, fps, noise=0) if cf.t < 9.0]
    src = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 180))
    for cf in clip:
        writer.write(cv2.cvtColor(cf.rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "framed.avi"
    result = blurcam("process", str(src), str(out), "--effect", "none", "--framing", "auto",
                     "--framing-speed", "fast")
    assert result.returncode == 0, result.stderr
    cap = cv2.VideoCapture(str(out))
    got = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        got.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(got) == len(clip)
    # The same video through the pipeline at the video's own clock.
    pipeline = FramePipeline(Settings(effect="none", framing="auto", framing_speed="fast"))
    src_cap = cv2.VideoCapture(str(src))
    views = []
    for i in range(len(clip)):
        _, bgr = src_cap.read()
        frame = frame_from_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), pipeline.lores_size, 0.0, i)
        processed = pipeline.process(frame, at=i / fps)
        views.append(processed.frame.view)
        if i in (len(clip) // 2, len(clip) - 1):
            assert psnr(got[i], i420_to_rgb(processed.yuv)) > 30, f"frame {i}"
    src_cap.release()
    assert views[-1][2] < 0.8 * 320, "by the end the camera has zoomed in on the seated person"


@pytest.mark.parametrize("args, message", [
    (["--framing", "sideways"], "framing"),
    (["--framing", "auto", "--framing-zoom", "5"], "framing_zoom"),
    (["--framing", "auto", "--framing-speed", "warp"], "framing_speed"),
])
def test_bad_framing_options_give_one_clear_line(args, message, portrait_file, tmp_path):
    path, _, _ = portrait_file
    result = blurcam("process", str(path), str(tmp_path / "out.png"), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
