"""`blurcam process`: the camera pipeline on the user's own photos and videos."""

from __future__ import annotations

import io
import os
import pty
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from appliance.cli import main
from appliance.frame import i420_to_rgb, rgb_to_i420
from appliance.process import Progress, process_file
from tests.support import capabilities
from tests.support.clips import TONE_HZ, audio_packets, decoded_audio, dominant_hz, make_clip, video_info
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


@pytest.fixture(scope="module")
def portrait_clip(tmp_path_factory, portrait):
    """Eight frames of the portrait panning sideways, 640x360 at 10 fps, MPEG-4 Part 2 video
    (which Chromium does not play) and AAC sound; with the true mask of its first frame."""
    rgb, truth = portrait
    small = cv2.resize(rgb, (640, 360), interpolation=cv2.INTER_AREA)
    frames = [np.roll(small, i * 2, axis=1) for i in range(8)]
    path = make_clip(tmp_path_factory.mktemp("clip") / "call.mp4", frames, fps=10)
    return path, frames, cv2.resize(truth, (640, 360), interpolation=cv2.INTER_NEAREST)


@pytest.fixture(scope="module")
def processed_clip(portrait_clip):
    """`blurcam process` run once on the clip, as a user runs it (not on a terminal)."""
    src = portrait_clip[0]
    out = src.with_name("out.mp4")
    return blurcam("process", str(src), str(out)), out


def test_a_video_becomes_h264_with_every_frame_blurred_and_its_sound_copied(portrait_clip, processed_clip):
    src, frames, truth = portrait_clip
    result, out = processed_clip
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "(8 frames)" in result.stdout
    info = video_info(out)
    assert (info["codec"], info["pix_fmt"]) == ("h264", "yuv420p")
    assert len(info["frames"]) == 8 and info["frames"][0].shape == (360, 640, 3)
    bg = background_box(truth)
    for original, processed in zip(frames, info["frames"]):
        assert detail(processed[bg]) < 0.3 * detail(original[bg])
    assert info["audio"] == ["aac"]
    assert audio_packets(out) == audio_packets(src)  # the sound itself, untouched


def test_sound_the_output_cannot_carry_is_reencoded_to_aac_and_still_sounds_the_same(portrait_clip, tmp_path):
    _, frames, _ = portrait_clip
    src = make_clip(tmp_path / "call.avi", frames, fps=10, audio_codec="pcm_s16le", channels=1)
    out = tmp_path / "out.mp4"
    assert process_file(str(src), str(out), {"effect": "none"}, progress_out=None) == 8
    assert video_info(out)["audio"] == ["aac"]
    samples, rate = decoded_audio(out)
    assert abs(dominant_hz(samples, rate) - TONE_HZ) < 5
    assert abs(len(samples) / rate - 0.8) < 0.1


def test_a_video_without_sound_is_fine(portrait_clip, tmp_path):
    _, frames, _ = portrait_clip
    src = make_clip(tmp_path / "silent.mp4", frames[:3], audio_codec=None)
    out = tmp_path / "out.mkv"
    assert process_file(str(src), str(out), {}, progress_out=None) == 3
    info = video_info(out)
    assert len(info["frames"]) == 3 and info["audio"] == []


def test_progress_is_plain_lines_when_not_on_a_terminal(processed_clip):
    result, _ = processed_clip
    last = [line for line in result.stderr.splitlines() if "frames" in line][-1]
    assert re.fullmatch(r"8/8 frames \(100%\), [\d.]+ fps, ETA 0:00", last), result.stderr
    assert "\r" not in result.stderr


def test_progress_is_a_bar_redrawn_in_place_on_a_terminal(portrait_clip, tmp_path):
    src, _, _ = portrait_clip
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "process", str(src), str(tmp_path / "out.mp4")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.wait(120) == 0
    text = shown.decode(errors="replace")
    assert "\r\x1b[2K" in text and "▕" in text
    assert re.search(r"8/8 frames ▕█{30}▏ 100%\s+[\d.]+ fps\s+ETA 0:00", text), text[-400:]


def test_progress_estimates_the_time_left_from_the_rate_so_far():
    now = [0.0]
    out = io.StringIO()
    progress = Progress(100, out, every_s=0.0, clock=lambda: now[0])
    now[0] = 5.0
    progress.update(25)
    assert out.getvalue().splitlines()[-1] == "25/100 frames (25%), 5.0 fps, ETA 0:15"
    unknown = Progress(None, out, every_s=0.0, clock=lambda: now[0])
    unknown.update(10)
    assert out.getvalue().splitlines()[-1].startswith("10 frames, ")


@pytest.mark.browser
def test_chromium_plays_the_processed_video_with_its_sound_and_not_the_original(portrait_clip, processed_clip,
                                                                                 tmp_path):
    from tests.web.browser.conftest import CHROMIUM, CHROMIUM_ARGS
    capabilities.require(capabilities.chromium(CHROMIUM))
    import playwright.sync_api as playwright
    src, _, _ = portrait_clip
    shutil.copy(processed_clip[1], tmp_path / "out.mp4")
    shutil.copy(src, tmp_path / "original.mp4")
    (tmp_path / "play.html").write_text("<!doctype html><video id=v></video>")
    play = """src => new Promise(resolve => {
        const v = document.getElementById('v');
        v.onerror = () => resolve({error: v.error.code});
        v.onended = () => resolve({ended: true, currentTime: v.currentTime, width: v.videoWidth,
            height: v.videoHeight, audioBytes: v.webkitAudioDecodedByteCount,
            frames: v.getVideoPlaybackQuality().totalVideoFrames});
        v.src = src;
        v.play().catch(() => {});
    })"""
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=[*CHROMIUM_ARGS, "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.goto((tmp_path / "play.html").as_uri())
            played = page.evaluate(play, "out.mp4")
            original = page.evaluate(play, "original.mp4")
        finally:
            browser.close()
    assert played.get("ended"), played
    assert (played["width"], played["height"]) == (640, 360)
    assert played["currentTime"] > 0.7 and played["frames"] >= 7
    assert played["audioBytes"] > 0  # the sound reached Chromium's decoder
    # The input's MPEG-4 Part 2 video (what the old output was) shows nothing in Chromium.
    assert original.get("error") == 4 or (original["width"], original["frames"]) == (0, 0), original


def test_the_input_given_as_the_output_is_refused_and_left_alone(portrait_file, portrait_clip, capsys):
    for src in (portrait_file[0], portrait_clip[0]):
        before = src.read_bytes()
        assert main(["process", str(src), str(src.parent / "." / src.name)]) == 2
        assert "is the input file" in capsys.readouterr().err
        assert src.read_bytes() == before


def test_a_background_implies_replace(portrait_file, tmp_path):
    path, rgb, truth = portrait_file
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((400, 600, 3), (90, 160, 30), np.uint8))  # BGR of (30, 160, 90)
    out = tmp_path / "out.png"
    assert blurcam("process", str(path), str(out), "--background", str(wall)).returncode == 0
    patch = read_rgb(out)[background_box(truth)].reshape(-1, 3).astype(int)
    assert np.abs(patch.mean(axis=0) - (30, 160, 90)).max() < 6

def test_a_background_with_another_effect_is_an_error(portrait_file, tmp_path, capsys):
    args = ["process", str(portrait_file[0]), str(tmp_path / "out.png"), "--background", str(portrait_file[0])]
    assert main([*args, "--effect", "blur"]) == 2
    assert "--background is only used with --effect replace, not --effect blur" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_the_privacy_card_is_an_effect_and_never_shows_the_camera_image(portrait_file, tmp_path):
    path, rgb, truth = portrait_file
    out = tmp_path / "out.png"
    assert blurcam("process", str(path), str(out), "--effect", "privacy").returncode == 0
    face = face_box(truth)
    assert psnr(read_rgb(out)[face], rgb[face]) < 15


def help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_lists_every_effect_and_shows_the_defaults(capsys):
    text = help_text(capsys, "process")
    assert "{blur,replace,none,privacy}" in text
    for default in ("(default: 60)", "(default: auto)", "(default: int8)", "default: blur"):
        assert default in text, default
    assert "(default: 127.0.0.1:8080)" in help_text(capsys, "web")
    assert "(default: auto)" in help_text(capsys, "run")


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
    out = tmp_path / "framed.mp4"
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
