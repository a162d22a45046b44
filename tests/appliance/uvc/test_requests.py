"""UVC request handling, fed with setup packets as the Linux host driver sends them."""

import struct

import pytest

from appliance.stream import StreamFormat
from appliance.uvc import requests as r
from appliance.uvc.formats import offered_formats

DEVICE = r.Device(formats=offered_formats(["640x360", "640x480", "1280x720", "1920x1080"]))
SETTINGS_VALUES = {"brightness": 0, "contrast": 100, "saturation": 100, "sharpness": 100}


def packet(hexbytes: str) -> r.Setup:
    return r.Setup.parse(bytes.fromhex(hexbytes))


# Recorded from uvcvideo (bmRequestType bRequest wValue wIndex wLength, little endian).
PROBE_GET_CUR = "a1 81 00 01 01 00 22 00"
PROBE_SET_CUR = "21 01 00 01 01 00 22 00"
PROBE_GET_MAX = "a1 83 00 01 01 00 22 00"
PROBE_GET_DEF = "a1 87 00 01 01 00 22 00"
COMMIT_SET_CUR = "21 01 00 02 01 00 22 00"
COMMIT_GET_CUR = "a1 81 00 02 01 00 22 00"
BRIGHTNESS_GET_INFO = "a1 86 00 02 00 02 01 00"
BRIGHTNESS_GET_MIN = "a1 82 00 02 00 02 02 00"
BRIGHTNESS_GET_MAX = "a1 83 00 02 00 02 02 00"
BRIGHTNESS_GET_CUR = "a1 81 00 02 00 02 02 00"
BRIGHTNESS_SET_CUR = "21 01 00 02 00 02 02 00"
ERROR_CODE_GET_CUR = "a1 81 00 02 00 00 01 00"


def fresh() -> r.State:
    return r.initial_state(DEVICE, SETTINGS_VALUES)


def probe_bytes(fmt: int, frame: int, interval: int, length: int = 34) -> bytes:
    raw = bytearray(length)
    struct.pack_into("<HBBI", raw, 0, 1, fmt, frame, interval)
    return bytes(raw)


def set_cur(state: r.State, setup_hex: str, data: bytes) -> tuple[r.State, r.Effects]:
    state, reply = r.handle_setup(DEVICE, state, packet(setup_hex))
    assert reply.data == bytes(len(data)), "SET_CUR must ask f_uvc for the data stage"
    return r.handle_data(DEVICE, state, data)


def get(state: r.State, setup_hex: str) -> bytes:
    _, reply = r.handle_setup(DEVICE, state, packet(setup_hex))
    assert not reply.stalled
    return reply.data


def test_default_probe_is_the_first_mjpeg_size_at_30_fps_with_sizes_filled_in():
    data = get(fresh(), PROBE_GET_CUR)
    assert len(data) == 34
    hint, fmt, frame, interval = struct.unpack_from("<HBBI", data, 0)
    max_frame, max_payload = struct.unpack_from("<II", data, 18)
    assert (fmt, frame, interval) == (1, 1, 333333)
    assert max_frame == 640 * 360 * 2
    assert max_payload == 3072


def test_probe_set_then_get_returns_the_host_choice_with_max_frame_size_of_that_frame():
    state, effects = set_cur(fresh(), PROBE_SET_CUR, probe_bytes(1, 3, 333333))
    assert effects.committed is None
    data = get(state, PROBE_GET_CUR)
    assert struct.unpack_from("<BBI", data, 2) == (1, 3, 333333)
    assert struct.unpack_from("<I", data, 18)[0] == 1280 * 720 * 2


def test_probe_interval_is_rounded_to_the_nearest_offered_rate():
    state, _ = set_cur(fresh(), PROBE_SET_CUR, probe_bytes(2, 2, 370000))  # 27 fps asked
    assert struct.unpack_from("<BBI", get(state, PROBE_GET_CUR), 2) == (2, 2, 400000)
    state, _ = set_cur(fresh(), PROBE_SET_CUR, probe_bytes(2, 2, 10_000_000))  # 1 fps asked
    assert struct.unpack_from("<I", get(state, PROBE_GET_CUR), 4)[0] == 666666


def test_probe_with_format_and_frame_index_out_of_range_is_clamped_to_what_is_offered():
    state, _ = set_cur(fresh(), PROBE_SET_CUR, probe_bytes(9, 9, 333333))
    data = get(state, PROBE_GET_CUR)
    assert struct.unpack_from("<BB", data, 2) == (2, 2)  # last format (YUYV), its last frame
    assert struct.unpack_from("<I", data, 18)[0] == 640 * 480 * 2
    state, _ = set_cur(fresh(), PROBE_SET_CUR, probe_bytes(0, 0, 0))
    assert struct.unpack_from("<BBI", get(state, PROBE_GET_CUR), 2) == (1, 1, 333333)


def test_commit_yields_the_stream_format_to_start():
    state, effects = set_cur(fresh(), COMMIT_SET_CUR, probe_bytes(1, 3, 333333))
    assert effects.committed == StreamFormat("mjpeg", 1280, 720, 30.0)
    assert struct.unpack_from("<BB", get(state, COMMIT_GET_CUR), 2) == (1, 3)
    _, effects = set_cur(fresh(), COMMIT_SET_CUR, probe_bytes(2, 1, 666666))
    assert effects.committed == StreamFormat("yuyv", 640, 360, 15.0)


@pytest.mark.parametrize("format_index, frame_index", [(3, 1), (0, 1), (1, 9), (2, 0)])
def test_commit_out_of_range_is_refused_with_out_of_range_error_code(format_index, frame_index):
    state, effects = set_cur(fresh(), COMMIT_SET_CUR, probe_bytes(format_index, frame_index, 333333))
    assert effects.committed is None
    assert state.commit == fresh().commit
    assert get(state, ERROR_CODE_GET_CUR) == bytes([r.ErrorCode.OUT_OF_RANGE])


def test_probe_max_is_the_last_frame_of_the_last_format_at_the_slowest_rate():
    data = get(fresh(), PROBE_GET_MAX)
    assert struct.unpack_from("<BBI", data, 2) == (2, 2, 666666)


def test_probe_accepts_uvc_1_0_length_and_answers_with_that_length():
    data = get(fresh(), "a1 87 00 01 01 00 1a 00")
    assert len(data) == 26


def test_brightness_info_range_and_current_value_come_from_settings_units():
    state = r.initial_state(DEVICE, {**SETTINGS_VALUES, "brightness": -40})
    assert get(state, BRIGHTNESS_GET_INFO) == bytes([0x03])
    assert get(state, BRIGHTNESS_GET_MIN) == (-100).to_bytes(2, "little", signed=True)
    assert get(state, BRIGHTNESS_GET_MAX) == (100).to_bytes(2, "little", signed=True)
    assert get(state, BRIGHTNESS_GET_CUR) == (-40).to_bytes(2, "little", signed=True)


def test_brightness_set_reports_the_change_for_the_settings():
    state, effects = set_cur(fresh(), BRIGHTNESS_SET_CUR, (25).to_bytes(2, "little", signed=True))
    assert effects.changed == {"brightness": 25}
    assert get(state, BRIGHTNESS_GET_CUR) == (25).to_bytes(2, "little", signed=True)


@pytest.mark.parametrize("name,selector,value", [
    ("contrast", 0x03, 150), ("saturation", 0x07, 0), ("sharpness", 0x08, 200)])
def test_contrast_saturation_sharpness_are_answered_and_settable(name, selector, value):
    setup = f"21 01 00 {selector:02x} 00 02 02 00"
    state, effects = set_cur(fresh(), setup, value.to_bytes(2, "little"))
    assert effects.changed == {name: value}
    assert get(state, f"a1 81 00 {selector:02x} 00 02 02 00") == value.to_bytes(2, "little")


def test_control_value_out_of_range_is_refused_and_error_code_says_out_of_range():
    state, effects = set_cur(fresh(), BRIGHTNESS_SET_CUR, (300).to_bytes(2, "little", signed=True))
    assert effects.changed == {}
    assert get(state, BRIGHTNESS_GET_CUR) == (0).to_bytes(2, "little", signed=True)
    assert get(state, ERROR_CODE_GET_CUR) == bytes([r.ErrorCode.OUT_OF_RANGE])


@pytest.mark.parametrize("setup_hex,code", [
    ("a1 81 00 09 00 02 02 00", r.ErrorCode.INVALID_CONTROL),   # gamma: not advertised
    ("a1 81 00 09 00 01 02 00", r.ErrorCode.INVALID_CONTROL),   # camera terminal: iris abs
    ("a1 81 00 02 00 07 02 00", r.ErrorCode.INVALID_UNIT),      # entity 7 does not exist
    ("a1 81 00 02 00 02 01 00", r.ErrorCode.INVALID_REQUEST),   # brightness with wLength 1
    ("a1 81 00 01 01 00 0a 00", r.ErrorCode.INVALID_REQUEST),   # probe with wLength 10
    ("a1 81 00 01 01 00 30 00", r.ErrorCode.INVALID_REQUEST),   # 48-byte probe on a 1.1 device
    ("a1 85 00 01 01 00 01 00", r.ErrorCode.INVALID_REQUEST),   # GET_LEN must be 2 bytes
    ("a1 84 00 02 01 00 22 00", r.ErrorCode.INVALID_REQUEST),   # GET_RES on commit
    ("a1 81 00 05 01 00 22 00", r.ErrorCode.INVALID_CONTROL),   # unknown streaming selector
    ("a1 8f 00 02 00 02 02 00", r.ErrorCode.INVALID_REQUEST),   # unknown request code
    ("21 81 00 02 00 02 02 00", r.ErrorCode.INVALID_REQUEST),   # GET with OUT direction
    ("a1 81 00 02 00 05 02 00", r.ErrorCode.INVALID_UNIT),      # interface 5 does not exist
    ("c1 81 00 02 00 02 02 00", r.ErrorCode.INVALID_REQUEST),   # vendor request
])
def test_malformed_or_unknown_requests_stall_with_the_right_error_code(setup_hex, code):
    state, reply = r.handle_setup(DEVICE, fresh(), packet(setup_hex))
    assert reply.stalled
    assert state.error_code == code
    assert get(state, ERROR_CODE_GET_CUR) == bytes([code])


def test_a_good_request_after_a_stall_clears_the_error_code():
    state, _ = r.handle_setup(DEVICE, fresh(), packet("a1 81 00 09 00 02 02 00"))
    state, reply = r.handle_setup(DEVICE, state, packet(BRIGHTNESS_GET_CUR))
    assert not reply.stalled
    assert get(state, ERROR_CODE_GET_CUR) == bytes([0])


def test_reading_the_error_code_reports_it_once_then_reads_zero():
    # UVC 1.5 section 4.2.1.2: reset to 0 after any successful request, this one included.
    state, _ = r.handle_setup(DEVICE, fresh(), packet("a1 81 00 09 00 02 02 00"))
    state, first = r.handle_setup(DEVICE, state, packet(ERROR_CODE_GET_CUR))
    state, second = r.handle_setup(DEVICE, state, packet(ERROR_CODE_GET_CUR))
    assert (first.data, second.data) == (bytes([r.ErrorCode.INVALID_CONTROL]), bytes([0]))


def test_data_stage_of_the_wrong_length_or_without_setup_is_refused_not_a_crash():
    state, _ = r.handle_setup(DEVICE, fresh(), packet(PROBE_SET_CUR))
    state, effects = r.handle_data(DEVICE, state, b"\x01\x00\x01")
    assert effects == r.Effects()
    assert state.error_code == r.ErrorCode.INVALID_REQUEST
    state, effects = r.handle_data(DEVICE, fresh(), b"\x00\x00")
    assert effects == r.Effects()
    assert state.error_code == r.ErrorCode.WRONG_STATE


def test_setup_packet_shorter_than_8_bytes_is_a_value_error():
    with pytest.raises(ValueError, match="3 bytes"):
        r.Setup.parse(b"\xa1\x81\x00")


def test_every_possible_request_on_the_control_interface_answers_or_stalls(tmp_path):
    # Exhaustive over request codes, selectors and the entities that exist: no exception.
    answered = 0
    for request in range(256):
        for selector in range(16):
            for entity in (0, 1, 2, 3):
                for length in (1, 2, 4, 8, 34):
                    rtype = 0xA1 if request & 0x80 else 0x21
                    setup = r.Setup(rtype, request, selector << 8, entity << 8, length)
                    _, reply = r.handle_setup(DEVICE, fresh(), setup)
                    answered += not reply.stalled
    # each UVC control x (CUR MIN MAX RES DEF INFO LEN SET) + the error code control (CUR INFO)
    assert answered == len(r.WANTED_CONTROLS) * 8 + 2


def test_advertised_bitmaps_map_back_to_exactly_the_answered_controls():
    camera = r.bm_controls(r.WANTED_CONTROLS, "camera", 3)
    processing = r.bm_controls(r.WANTED_CONTROLS, "processing", 2)
    # Camera terminal: auto-exposure mode (bit 1), exposure time (3), focus (5), zoom (9),
    # pan/tilt (11), autofocus (17).
    assert camera == bytes([0b00101010, 0b00001010, 0b00000010])
    # Processing unit: brightness, contrast, saturation, sharpness (0, 1, 3, 4), white balance
    # temperature (6), power line frequency (10), white balance temperature auto (12).
    assert processing == bytes([0b01011011, 0b00010100])
    def place(c):
        return (c.unit, c.bit)
    assert sorted(r.controls_from_bitmaps(camera, processing), key=place) == sorted(r.WANTED_CONTROLS, key=place)


def test_a_bitmap_advertising_a_control_we_do_not_answer_is_an_error():
    with pytest.raises(ValueError, match="processing bmControls advertises bit 5"):
        r.controls_from_bitmaps(b"\x00\x00\x00", bytes([0b00100001, 0]))


def test_old_kernel_auto_exposure_bit_is_answered_by_the_exposure_mode_control():
    """Kernels before 6.3 advertise the auto-exposure bit whatever we want: it is the camera's
    exposure mode (appliance/controls.py), auto or manual; other modes are refused."""
    device = r.Device(formats=DEVICE.formats,
                      controls=r.controls_from_bitmaps(b"\x02\x00\x00", b"\x01\x00"))
    state = r.initial_state(device, SETTINGS_VALUES)
    _, reply = r.handle_setup(device, state, packet("a1 81 00 02 00 01 01 00"))
    assert reply.data == b"\x02"  # auto
    _, reply = r.handle_setup(device, state, packet("a1 84 00 02 00 01 01 00"))
    assert reply.data == b"\x03"  # GET_RES: the modes offered, manual and auto
    state, _ = r.handle_setup(device, state, packet("21 01 00 02 00 01 01 00"))
    state, effects = r.handle_data(device, state, b"\x08")  # aperture priority: not offered
    assert state.error_code == r.ErrorCode.OUT_OF_RANGE and effects.changed == {}
    state, _ = r.handle_setup(device, state, packet("21 01 00 02 00 01 01 00"))
    state, effects = r.handle_data(device, state, b"\x01")  # manual
    assert state.error_code == r.ErrorCode.NO_ERROR and effects.changed == {"exposure_mode": 1}
