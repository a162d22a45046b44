"""The image-controls table: every reader (settings, UVC, picamera2, the page, the software
adjustment) follows its rows, and a new row is all a new control needs there."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import create_model

from appliance import adjust, controls, settings
from appliance.controls import CONTROLS, ImageControl, Uvc, applied_by_camera, libcamera_values
from appliance.settings import Settings, SettingsError
from appliance.uvc import requests as r
from appliance.uvc.formats import offered_formats

# Ranges a Raspberry Pi camera (imx708, Camera Module 3) advertises: (min, max, default).
# (The Raspberry Pi IPA's list, src/ipa/rpi/common/ipa_base.cpp, with a focus lens.)
PI_CONTROLS = {"Brightness": (-1.0, 1.0, 0.0), "Contrast": (0.0, 32.0, 1.0),
               "Saturation": (0.0, 32.0, 1.0), "Sharpness": (0.0, 16.0, 1.0),
               "AeEnable": (False, True, None), "ExposureTime": (26, 66666, None),
               "ExposureValue": (-8.0, 8.0, 0.0), "AeFlickerMode": (0, 1, 0), "AeFlickerPeriod": (100, 1000000, None),
               "AwbEnable": (False, True, None), "AwbMode": (0, 7, 0),
               "AfMode": (0, 2, 0), "LensPosition": (0.0, 32.0, 1.0),
               "FrameDurationLimits": (33333, 120000, None)}
NEUTRAL = {"brightness": 0, "contrast": 100, "saturation": 100, "sharpness": 100}

# Rows as the camera-control and framing work will add them: a mode-like control with named
# values, and two values sharing one UVC control (Pan/Tilt (Absolute), UVC 1.5 table A-12).
ANTI_FLICKER = ImageControl("anti_flicker", "Anti-flicker", 0, 3, 1, 0,
                            Uvc("processing", 0x05, 10, size=1), "AeFlickerPeriod",
                            lambda v, _cam: {1: 20000, 2: 16667}.get(v, 0),
                            choices={0: "Off", 1: "50 Hz", 2: "60 Hz"})
PAN = ImageControl("pan", "Pan", -36000, 36000, 0, 0,
                   Uvc("camera", 0x0D, 11, size=4, signed=True, offset=0, resolution=3600))
TILT = ImageControl("tilt", "Tilt", -36000, 36000, 0, 0,
                    Uvc("camera", 0x0D, 11, size=4, signed=True, offset=4, resolution=3600))


def test_every_row_is_a_settings_field_with_the_rows_range_and_default():
    for c in CONTROLS:
        assert Settings().model_dump()[c.name] == c.default
        assert Settings.model_validate({c.name: c.minimum}).model_dump()[c.name] == c.minimum
        assert Settings.model_validate({c.name: c.maximum}).model_dump()[c.name] == c.maximum
        for bad in (c.minimum - 1, c.maximum + 1):
            with pytest.raises(SettingsError) as err:
                settings.validate({c.name: bad})
            assert c.allowed() in err.value.errors[c.name]
    assert settings.image_controls(Settings()) == {c.name: c.default for c in CONTROLS}


def test_a_choice_row_accepts_only_its_values_and_says_which_they_are():
    model = create_model("WithChoice", __base__=Settings, anti_flicker=settings._control_field(ANTI_FLICKER))
    assert model.model_validate({"anti_flicker": 2}, strict=True).model_dump()["anti_flicker"] == 2
    with pytest.raises(Exception, match="not an allowed value"):
        model.model_validate({"anti_flicker": 3}, strict=True)
    assert ANTI_FLICKER.allowed() == "one of 0 (Off), 1 (50 Hz), 2 (60 Hz)"


def test_every_row_with_a_uvc_place_is_advertised_and_answered_with_its_range():
    device = r.Device(formats=offered_formats(["640x360"]))
    state = r.initial_state(device, {})
    assert {p.name for control in r.WANTED_CONTROLS for p in control.parts} == {c.name for c in CONTROLS if c.uvc}
    for control in r.WANTED_CONTROLS:  # one UVC control may carry several rows (pan and tilt)
        index = (1 if control.unit == "camera" else 2) << 8
        for request, pick in ((r.GET_MIN, "minimum"), (r.GET_MAX, "maximum"), (r.GET_DEF, "default"),
                              (r.GET_CUR, "default")):
            _, reply = r.handle_setup(device, state, r.Setup(0xA1, request, control.selector << 8,
                                                             index, control.size))
            want = b"".join(getattr(p, pick).to_bytes(p.uvc.size, "little", signed=p.uvc.signed)
                            for p in control.parts)
            assert reply.data == want, (control.name, request)
    for unit, size in (("camera", 3), ("processing", 2)):
        advertised = r.bm_controls(r.WANTED_CONTROLS, unit, size)
        assert int.from_bytes(advertised, "little") == sum({1 << c.uvc.bit for c in CONTROLS if c.uvc and c.uvc.unit == unit})


def test_two_rows_sharing_a_uvc_control_are_read_and_set_together():
    device = r.Device(formats=offered_formats(["640x360"]),
                      controls=r._controls_from_table((PAN, TILT, ANTI_FLICKER), settable=True))
    state = r.initial_state(device, {"pan": 7200, "tilt": -3600})
    pan_tilt = (0xA1, r.GET_CUR, 0x0D << 8, 1 << 8, 8)
    _, reply = r.handle_setup(device, state, r.Setup(*pan_tilt))
    assert reply.data == (7200).to_bytes(4, "little", signed=True) + (-3600).to_bytes(4, "little", signed=True)
    _, reply = r.handle_setup(device, state, r.Setup(0xA1, r.GET_RES, 0x0D << 8, 1 << 8, 8))
    assert reply.data == (3600).to_bytes(4, "little") * 2
    state, _ = r.handle_setup(device, state, r.Setup(0x21, r.SET_CUR, 0x0D << 8, 1 << 8, 8))
    state, effects = r.handle_data(device, state, (-100).to_bytes(4, "little", signed=True) + (50).to_bytes(4, "little", signed=True))
    assert effects.changed == {"pan": -100, "tilt": 50}
    assert r.bm_controls(device.controls, "camera", 3) == (1 << 11).to_bytes(3, "little")


def test_a_choice_row_refuses_a_value_between_its_choices_at_the_usb_level():
    device = r.Device(formats=offered_formats(["640x360"]),
                      controls=r._controls_from_table((ANTI_FLICKER,), settable=True))
    state = r.initial_state(device, {})
    state, _ = r.handle_setup(device, state, r.Setup(0x21, r.SET_CUR, 0x05 << 8, 2 << 8, 1))
    state, effects = r.handle_data(device, state, b"\x03")
    assert effects.changed == {} and state.error_code == r.ErrorCode.OUT_OF_RANGE


@pytest.mark.parametrize("broken, words", [
    ((PAN, dataclasses.replace(PAN, label="again")), "duplicate names"),
    ((PAN, dataclasses.replace(TILT, uvc=dataclasses.replace(TILT.uvc, offset=2))), "overlap"),
    ((PAN, dataclasses.replace(TILT, uvc=dataclasses.replace(TILT.uvc, bit=12))), "one bmControls bit"),
    ((PAN, dataclasses.replace(ANTI_FLICKER, uvc=Uvc("camera", 0x05, 11))), "one bmControls bit"),
    ((dataclasses.replace(PAN, maximum=1 << 40),), "does not fit 4 byte"),
    ((dataclasses.replace(PAN, default=40000),), "default/neutral outside"),
    ((dataclasses.replace(ANTI_FLICKER, default=3),), "not among its choices"),
])
def test_a_table_a_host_could_not_use_is_refused(broken, words):
    with pytest.raises(ValueError, match=words):
        controls.check_table(broken)


def test_the_software_adjustment_covers_exactly_the_software_rows():
    assert adjust.NEUTRAL == {c.name: c.neutral for c in CONTROLS if c.software}
    assert NEUTRAL == adjust.NEUTRAL


def test_neutral_settings_give_the_cameras_neutral_controls():
    assert libcamera_values(NEUTRAL, PI_CONTROLS) == {
        "Brightness": 0.0, "Contrast": 1.0, "Saturation": 1.0, "Sharpness": 1.0}


def test_settings_units_map_onto_the_cameras_ranges():
    low = libcamera_values({"brightness": -100, "contrast": 0, "saturation": 0, "sharpness": 0}, PI_CONTROLS)
    high = libcamera_values({"brightness": 100, "contrast": 200, "saturation": 200, "sharpness": 200}, PI_CONTROLS)
    assert low == {"Brightness": -1.0, "Contrast": 0.0, "Saturation": 0.0, "Sharpness": 0.0}
    assert high == {"Brightness": 1.0, "Contrast": 2.0, "Saturation": 2.0, "Sharpness": 16.0}
    assert libcamera_values({"brightness": 25, "sharpness": 150}, PI_CONTROLS) == {
        "Brightness": 0.25, "Sharpness": 8.5}


def test_controls_are_clamped_to_a_narrower_advertised_range():
    narrow = {"Contrast": (0.5, 1.5, 1.0)}
    assert libcamera_values({"contrast": 200}, narrow) == {"Contrast": 1.5}
    assert libcamera_values({"contrast": 10}, narrow) == {"Contrast": 0.5}


def test_controls_the_camera_does_not_advertise_are_left_to_the_pipeline():
    # libcamera's virtual camera advertises only these two.
    virtual = {"FaceDetectMode": (0, 1, 0), "FrameDurationLimits": (33333, 33333, 33333)}
    assert libcamera_values(NEUTRAL | {"brightness": 50}, virtual) == {}
    assert applied_by_camera(virtual) == frozenset()
    # Camera Module 3 has every control that is a libcamera one (zoom and pan/tilt are crops).
    assert applied_by_camera(PI_CONTROLS) == {c.name for c in CONTROLS if c.libcamera}


def test_the_settings_page_has_one_control_per_row_picture_camera_or_framing():
    from web.views import SECTIONS
    sections = {title: section for title, _id, section in SECTIONS}
    on_page = [c.name for title in ("Picture", "Camera", "Framing") for c in sections[title]
               if c.name in controls.NAMES]
    assert sorted(on_page) == sorted(controls.NAMES)
    assert [c.name for c in sections["Picture"] if c.name in controls.NAMES] == \
        [c.name for c in CONTROLS if c.software]
    for title in ("Picture", "Camera", "Framing"):
        for c in sections[title]:
            if c.name in controls.BY_NAME:
                row = controls.BY_NAME[c.name]
                assert (c.label, c.minimum, c.maximum) == (row.label, row.minimum, row.maximum)


def test_the_camera_rows_map_onto_the_pi_cameras_controls():
    manual = {"exposure_mode": 1, "exposure_time": 200, "exposure_compensation": 5,
              "white_balance_auto": 0, "white_balance_temperature": 3200,
              "power_line_frequency": 1, "focus_auto": 0, "focus_position": 200}
    assert libcamera_values(manual, PI_CONTROLS) == {
        "AeEnable": False, "ExposureTime": 20000,  # 1/50 s; no compensation without auto exposure
        "AwbMode": 2,  # tungsten
        "AeFlickerMode": 1, "AeFlickerPeriod": 10000,  # 50 Hz mains: lights flicker at 100 Hz
        "AfMode": 0, "LensPosition": 2.0}  # 50 cm
    auto = {**manual, "exposure_mode": 2, "white_balance_auto": 1, "power_line_frequency": 0, "focus_auto": 1}
    assert libcamera_values(auto, PI_CONTROLS) == {
        "AeEnable": True, "ExposureValue": 0.5, "AwbMode": 0, "AeFlickerMode": 0, "AfMode": 2}
    assert libcamera_values({"power_line_frequency": 2}, PI_CONTROLS)["AeFlickerPeriod"] == 8333


@pytest.mark.parametrize("kelvin, preset", [(2500, 1), (2899, 1), (3200, 2), (4000, 3), (5500, 5), (7500, 6)])
def test_a_colour_temperature_picks_the_nearest_white_balance_preset(kelvin, preset):
    values = {"white_balance_auto": 0, "white_balance_temperature": kelvin}
    assert libcamera_values(values, PI_CONTROLS) == {"AwbMode": preset}


def test_a_camera_without_focus_applies_the_others_and_leaves_focus_unavailable():
    no_lens = {k: v for k, v in PI_CONTROLS.items() if k not in ("AfMode", "LensPosition")}
    assert applied_by_camera(no_lens) == {c.name for c in CONTROLS if c.libcamera} - {"focus_auto", "focus_position"}
    assert "AfMode" not in libcamera_values({"focus_auto": 1}, no_lens)
