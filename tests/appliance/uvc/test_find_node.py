"""Finding the f_uvc video node from configfs and sysfs (fake trees laid out like the kernel's)."""

from pathlib import Path

from appliance.uvc.device import find_uvc_function


def make_gadget(configfs: Path, name: str, udc: str, functions=("uvc.usb0",)) -> Path:
    gadget = configfs / name
    for f in functions:
        (gadget / "functions" / f).mkdir(parents=True)
    (gadget / "UDC").write_text(udc + "\n")
    return gadget


def test_the_node_under_the_bound_udcs_gadget_device_is_found(tmp_path):
    configfs, udc_class, v4l = tmp_path / "cfg", tmp_path / "udc", tmp_path / "v4l"
    make_gadget(configfs, "other", "", ("uvc.usb0",))  # not bound: ignored
    gadget = make_gadget(configfs, "blurcam", "fe980000.usb")
    (udc_class / "fe980000.usb" / "device" / "gadget.0" / "video4linux" / "video3").mkdir(parents=True)
    v4l.mkdir()
    assert find_uvc_function(configfs, udc_class, v4l) == ("/dev/video3", gadget / "functions" / "uvc.usb0")


def test_older_layouts_are_matched_by_the_video_device_name_being_the_udc(tmp_path):
    configfs, udc_class, v4l = tmp_path / "cfg", tmp_path / "udc", tmp_path / "v4l"
    make_gadget(configfs, "blurcam", "usbip-vudc.0")
    (udc_class / "usbip-vudc.0" / "device").mkdir(parents=True)
    for node, name in (("video0", "vivid"), ("video1", "usbip-vudc.0")):
        (v4l / node).mkdir(parents=True)
        (v4l / node / "name").write_text(name + "\n")
    assert find_uvc_function(configfs, udc_class, v4l)[0] == "/dev/video1"


def test_no_configfs_or_no_uvc_function_means_no_node(tmp_path):
    assert find_uvc_function(tmp_path / "missing", tmp_path, tmp_path) is None
    make_gadget(tmp_path / "cfg", "serial-only", "fe980000.usb", ("acm.usb0",))
    assert find_uvc_function(tmp_path / "cfg", tmp_path, tmp_path) is None
