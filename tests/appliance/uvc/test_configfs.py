"""Gadget inputs: USB identity from the fleet file, the board serial, the UDC choice."""

import pytest

from appliance.uvc import configfs
from appliance.uvc.formats import offered_formats


def test_usb_identity_reads_hex_strings_and_ints_from_the_fleet_usb_table(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[usb]\nvendor_id = "0x1209"\nproduct_id = 0xb1c4\nmanufacturer = "Acme"\n'
                     'product = "BlurCam"\nserial_number = "CAM-0042"\n')
    ident = configfs.read_usb_identity(fleet)
    assert (ident.vendor_id, ident.product_id) == (0x1209, 0xB1C4)
    assert (ident.manufacturer, ident.product, ident.serial_number) == ("Acme", "BlurCam", "CAM-0042")


def test_a_bad_usb_id_names_the_field(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[usb]\nvendor_id = "0x12345"\n')
    with pytest.raises(configfs.GadgetError, match=r"\[usb\] vendor_id"):
        configfs.read_usb_identity(fleet)


def test_serial_comes_from_the_device_tree_without_its_trailing_nul(tmp_path):
    dt = tmp_path / "serial-number"
    dt.write_bytes(b"10000000abcdef12\x00")
    assert configfs.device_serial((dt,), (tmp_path / "none",)) == "10000000abcdef12"


def test_without_a_device_tree_the_serial_is_a_stable_hash_of_the_machine_id(tmp_path):
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    first = configfs.device_serial((tmp_path / "missing",), (tmp_path / "gone", mid))
    assert first == configfs.device_serial((tmp_path / "missing",), (tmp_path / "gone", mid))
    assert len(first) == 16 and "0123456789abcdef" not in first
    mid.write_text("fedcba9876543210fedcba9876543210\n")
    assert configfs.device_serial((tmp_path / "missing",), (tmp_path / "gone", mid)) != first


def test_no_udc_is_a_clear_error_and_a_named_udc_must_exist(tmp_path):
    with pytest.raises(configfs.GadgetError, match="no USB device controller"):
        configfs.pick_udc(None, tmp_path)
    (tmp_path / "fe980000.usb").mkdir()
    assert configfs.pick_udc(None, tmp_path) == "fe980000.usb"
    with pytest.raises(configfs.GadgetError, match="'dummy_udc.0' not found"):
        configfs.pick_udc("dummy_udc.0", tmp_path)


def test_offered_formats_follow_the_resolutions_setting_and_keep_yuyv_at_usb2_sizes():
    mjpeg, yuyv = offered_formats(["1280x720", "640x360"])
    assert [f.size for f in mjpeg.frames] == ["640x360", "1280x720"]
    assert [f.size for f in yuyv.frames] == ["640x360", "640x480"]
    assert mjpeg.frames[0].intervals == (333333, 400000, 666666)
    # 640x480 YUYV at 30 fps fits USB 2.0 high-speed isochronous (3072 B x 8000/s).
    assert 640 * 480 * 2 * 30 < 3072 * 8000


def test_no_serial_source_at_all_is_an_error_that_says_how_to_fix_it(tmp_path):
    with pytest.raises(configfs.GadgetError, match="set serial_number in the fleet file"):
        configfs.device_serial((tmp_path / "a",), (tmp_path / "b",))


def configfs_uvc_function(root, maxpacket: int, bcd_uvc: str = "0x0110"):
    """A directory shaped like a bound f_uvc function in configfs, as the kernel lays it out."""
    from appliance.uvc import requests

    function = root / "uvc.usb0"
    files = {
        "streaming_maxpacket": str(maxpacket),
        "control/bInterfaceNumber": "0",
        "control/header/h/bcdUVC": bcd_uvc,
        "control/terminal/camera/default/bTerminalID": "1",
        "control/terminal/camera/default/bmControls": "0\n0\n0",
        "control/processing/default/bUnitID": "2",
        "control/processing/default/bmControls": "\n".join(
            str(b) for b in requests.bm_controls(requests.WANTED_CONTROLS, "processing", 2)),
        "streaming/bInterfaceNumber": "1",
        "streaming/mjpeg/m/bFormatIndex": "1",
        "streaming/mjpeg/m/720p/bFrameIndex": "1",
        "streaming/mjpeg/m/720p/wWidth": "1280",
        "streaming/mjpeg/m/720p/wHeight": "720",
        "streaming/mjpeg/m/720p/dwFrameInterval": "333333\n666666",
        "streaming/mjpeg/m/720p/dwDefaultFrameInterval": "333333",
        "streaming/mjpeg/m/720p/dwMaxVideoFrameBufferSize": str(1280 * 720 * 2),
    }
    for rel, text in files.items():
        (function / rel).parent.mkdir(parents=True, exist_ok=True)
        (function / rel).write_text(text + "\n")
    return function


@pytest.mark.parametrize("maxpacket", [1024, 3072])
def test_the_payload_size_told_to_the_host_is_the_one_configfs_holds(tmp_path, maxpacket):
    """dwMaxPayloadTransferSize in the probe reply follows streaming_maxpacket (a full-speed or
    low-bandwidth gadget offers less than 3072 bytes a microframe; promising more breaks hosts)."""
    import struct

    from appliance.uvc import requests

    device = configfs.read_device(configfs_uvc_function(tmp_path, maxpacket))
    assert device.max_payload == maxpacket
    state = requests.initial_state(device, {})
    probe_get_cur = requests.Setup(0xA1, requests.GET_CUR, requests.VS_PROBE_CONTROL << 8, 1, 34)
    _, reply = requests.handle_setup(device, state, probe_get_cur)
    assert struct.unpack_from("<I", reply.data, 22)[0] == maxpacket
    assert [f.frames[0].size for f in device.formats] == ["1280x720"]
