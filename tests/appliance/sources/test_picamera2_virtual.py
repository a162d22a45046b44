"""The picamera2 source on real picamera2 + libcamera (virtual camera) in a Debian trixie rootfs.

The virtual camera plays JPEG scenes of real people (the demo's public-domain photos on busy
backgrounds, with their true person masks); the project's own source captures them inside the
rootfs and the full pipeline blurs them; the assertions here compare what came out with what went
in. Builds the rootfs on first use (~3 min, cached in tests/.cache/).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.frame import i420_to_rgb
from appliance.sources.demo import DemoSource
from tests.support import capabilities
from tests.support.picamera2.picamera2_rootfs import HERE, ensure_rootfs, run_in_rootfs, unavailable_reason

pytestmark = [pytest.mark.rootfs,
              capabilities.needs(unavailable_reason())]

MAIN_W, MAIN_H = 1280, 720
SCENE_TIMES = (1.0, 11.0, 21.0)  # three demo scenes, each a different person and background
CAPTURED_FRAMES = 12
PROBE = "/opt/blurcam/tests/support/picamera2/probe.py"


@pytest.fixture(scope="module")
def rootfs() -> Path:
    return ensure_rootfs()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """JPEG scenes for the camera to play, their decoded pixels and their true person masks."""
    frames_dir = tmp_path_factory.mktemp("frames")
    demo = DemoSource(paced=False)
    demo.start(MAIN_W, MAIN_H, 30, (256, 144))
    pictures, truths = [], []
    for i, t in enumerate(SCENE_TIMES):
        rgb, truth = demo.render_with_truth(t)
        path = frames_dir / f"scene{i}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        pictures.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
        truths.append(truth)
    return frames_dir, pictures, truths


def probe(rootfs: Path, tmp_path: Path, frames_dir: Path, *args: str,
          yaml_text: str | None = None) -> dict:
    yaml = tmp_path / "virtual.yaml"
    yaml.write_text((HERE / "virtual.yaml").read_text() if yaml_text is None else yaml_text)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    result = run_in_rootfs(rootfs, [PROBE, *args], virtual_yaml=yaml, frames_dir=frames_dir,
                           out_dir=out)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, (
        f"probe {args} failed (exit {result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def captured(rootfs, scenes, tmp_path_factory) -> tuple[dict, list[dict]]:
    tmp = tmp_path_factory.mktemp("capture")
    result = probe(rootfs, tmp, scenes[0], "capture", "/out", str(CAPTURED_FRAMES))
    arrays = [dict(np.load(p)) for p in sorted((tmp / "out").glob("frame*.npz"))]
    return result, arrays


def closest_scene(rgb: np.ndarray, pictures: list[np.ndarray]) -> tuple[int, float]:
    """Which scene a captured picture shows, and its mean absolute difference from it."""
    diffs = [float(np.abs(rgb.astype(np.int16) - p.astype(np.int16)).mean()) for p in pictures]
    best = int(np.argmin(diffs))
    return best, diffs[best]


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """64x64: compares pictures regardless of how they were scaled or stretched."""
    return cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)


def sharpness(gray: np.ndarray, region: np.ndarray) -> float:
    return float(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F)[region].var())


def test_auto_choice_picks_the_libcamera_camera(captured):
    result, _ = captured
    assert result["auto_spec"] == "picamera2"
    assert "Blurcam Test Camera" in result["auto_reason"]
    assert result["source_name"] == "picamera2"


def test_frames_are_i420_main_and_rgb_lores_at_the_requested_sizes(captured):
    result, arrays = captured
    lores_w, lores_h = result["lores_size"]
    assert len(arrays) == CAPTURED_FRAMES
    for frame in result["frames"]:
        assert frame["yuv_shape"] == [MAIN_H * 3 // 2, MAIN_W] and frame["yuv_dtype"] == "uint8"
        assert frame["lores_shape"] == [lores_h, lores_w, 3] and frame["lores_dtype"] == "uint8"
    # The virtual camera only makes NV12: the source asked for YUV420 and converted.
    assert result["streams"]["main"][:3] == ["NV12", MAIN_W, MAIN_H]
    assert result["streams"]["lores"][:3] == ["NV12", lores_w, lores_h]


def test_captured_frames_show_the_scenes_the_camera_played(captured, scenes):
    _, pictures, _ = scenes
    _, arrays = captured
    thumbnails = [thumbnail(p) for p in pictures]
    matches = []
    for a in arrays:
        main_scene, main_diff = closest_scene(i420_to_rgb(a["yuv"]), pictures)
        lores_scene, lores_diff = closest_scene(thumbnail(a["lores"]), thumbnails)
        _, swapped_diff = closest_scene(thumbnail(a["lores"][..., ::-1]), thumbnails)
        matches.append((main_scene, round(main_diff, 1), lores_scene, round(lores_diff, 1),
                        round(swapped_diff, 1)))
    # Main: the JPEG's own pixels within JPEG->NV12 rounding (other scenes differ by > 60).
    assert all(m[1] < 3.0 for m in matches), matches
    # Lores: the same scene, scaled by the camera, in R,G,B order. The camera's scaling filter
    # differs from ours by 5-13 levels at the landscape model's 256x144 (detailed scenes alias
    # more); swapping R and B costs 35-70, so the order is judged relative to that.
    assert all(m[2] == m[0] and m[3] < 15.0 and 3 * m[3] < m[4] for m in matches), matches
    assert len({m[0] for m in matches}) >= 2, f"the camera cycles through its scenes: {matches}"


def test_timestamps_are_sensor_times_on_the_monotonic_clock(captured):
    frames = captured[0]["frames"]
    assert [f["sequence"] for f in frames] == list(range(1, CAPTURED_FRAMES + 1))
    stamps = [f["timestamp"] for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps
    for f in frames:
        # Taken before read() returned, and not from another clock (the wall clock is decades
        # away; a loaded build machine can hold a frame for a second before read() returns).
        assert 0.0 <= f["returned_at"] - f["timestamp"] < 5.0, f


def test_the_pipeline_keeps_the_person_and_blurs_the_background(captured, scenes):
    _, pictures, truths = scenes
    _, arrays = captured
    kernel = np.ones((41, 41), np.uint8)
    for a in arrays:
        before, after = i420_to_rgb(a["yuv"]), i420_to_rgb(a["out"])
        scene, _ = closest_scene(before, pictures)
        truth = truths[scene]
        person = cv2.erode((truth > 0.99).astype(np.uint8), kernel).astype(bool)
        background = cv2.erode((truth < 0.01).astype(np.uint8), kernel).astype(bool)
        person_change = float(np.abs(after.astype(np.int16) - before.astype(np.int16))[person].mean())
        assert person_change < 2.0, f"scene {scene}: the person changed by {person_change:.1f} levels"
        gray_before = cv2.cvtColor(before, cv2.COLOR_RGB2GRAY)
        gray_after = cv2.cvtColor(after, cv2.COLOR_RGB2GRAY)
        kept = sharpness(gray_after, background) / sharpness(gray_before, background)
        assert kept < 0.05, f"scene {scene}: background kept {kept:.0%} of its detail"
        alpha = cv2.resize(a["alpha"].astype(np.float32), (MAIN_W, MAIN_H))
        assert alpha[person].mean() > 0.9 and alpha[background].mean() < 0.05, (
            f"scene {scene}: mask {alpha[person].mean():.2f} on the person, "
            f"{alpha[background].mean():.2f} on the background")


def test_twenty_start_stop_cycles_leak_no_buffers(rootfs, scenes, tmp_path):
    result = probe(rootfs, tmp_path, scenes[0], "cycles", "20")
    before, after, streaming = result["before"], result["after"], result["while_streaming"]
    assert streaming["memfds"] > 0  # the buffers exist while streaming...
    assert after["memfds"] == before["memfds"] == 0  # ...and are all gone after stop()
    assert after["memfd_maps"] == before["memfd_maps"] == 0
    assert after["fds"] == before["fds"], (before, after)
    assert after["threads"] == before["threads"], (before, after)
    assert after["rss_kb"] - before["rss_kb"] < 8 * 1024, (before, after)


def test_a_missing_camera_gives_a_clear_error_and_auto_falls_back(rootfs, scenes, tmp_path):
    result = probe(rootfs, tmp_path, scenes[0], "nocamera", yaml_text="%YAML 1.1\n---\n")
    assert result["error"] is not None and result["error"].startswith("no camera found"), result
    assert result["auto_spec"] == "demo", result
    assert "libcamera lists none" in result["auto_reason"]


def test_a_busy_camera_gives_a_clear_error_and_frees_on_stop(rootfs, scenes, tmp_path):
    result = probe(rootfs, tmp_path, scenes[0], "busy")
    assert result["error"] is not None and "busy" in result["error"], result
    assert result["first_still_reading"] == 2  # the camera's owner kept streaming
    assert result["second_after_release"] == 1


def test_framing_crops_in_software_because_the_virtual_camera_has_no_scaler_crop(rootfs, scenes, tmp_path):
    """libcamera's virtual pipeline does not take ScalerCrop (a Pi's ISP does: see the hardware
    checklist), so the source offers no sensor crop and the pipeline crops in software: the
    framed picture and its mask still show the same part of the scene."""
    frames_dir = tmp_path / "one-scene"
    frames_dir.mkdir()
    (frames_dir / "scene0.jpg").write_bytes((scenes[0] / "scene0.jpg").read_bytes())
    result = probe(rootfs, tmp_path, frames_dir, "framing", "/out", "75")
    assert "ScalerCrop" not in result["advertised_controls"]
    assert result["crop_canvas"] is None and result["sensor_crop"] is False
    x, y, w, h = result["views"][-1]
    assert w < MAIN_W * 0.9, "the camera zoomed in on the person"
    assert abs(w / h - MAIN_W / MAIN_H) < 0.02
    framed = np.load(tmp_path / "out" / "framed.npz")
    truth = scenes[2][0][y:y + h, x:x + w]
    alpha = cv2.resize(framed["alpha"].astype(np.float32), (w, h)) > 0.5
    person = truth > 0.5
    assert (alpha & person).sum() / (alpha | person).sum() > 0.9


def test_the_cameras_own_controls_are_unavailable_on_a_camera_without_them(rootfs, scenes, tmp_path):
    """Exposure, white balance, anti-flicker and focus set to manual values before and while the
    camera runs. libcamera's virtual pipeline advertises none of their controls (a Pi camera's IPA
    does: tests/appliance/test_controls.py maps onto its list), so none is sent, the source does
    not claim them (the page shows them as unavailable) and frames keep coming."""
    from appliance import controls
    result = probe(rootfs, tmp_path, scenes[0], "controls", "5")
    camera_rows = {c.name for c in controls.CONTROLS if not c.software}
    wanted = {c.libcamera for c in controls.CONTROLS if not c.software}
    assert not wanted & set(result["advertised_controls"]), result["advertised_controls"]
    assert result["sent"] == []
    assert not camera_rows & set(result["hardware_controls"])
    assert result["frames_after"][0] > result["frames_before"][-1]
