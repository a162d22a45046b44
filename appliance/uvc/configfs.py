"""Build, remove and inspect the configfs USB gadget: a UVC webcam, optionally plus NCM networking.

`gadget_up` is idempotent: a gadget that already matches what is wanted is left alone (the
daemon may have its video node open); anything else under our name, including the remains of a
crash half-way through, is torn down and rebuilt. One configuration only (`c.1`): macOS ignores
gadgets whose webcam is not in the first configuration. Never the legacy g_ether: it claims the
only UDC.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import fleet
from appliance.uvc import requests
from appliance.uvc.formats import Encoding, FrameSize, VideoFormat, offered_formats

CONFIGFS_GADGETS = Path("/sys/kernel/config/usb_gadget")
UDC_CLASS = Path("/sys/class/udc")
GADGET_NAME = "blurcam"
UVC_FUNCTION = "uvc.usb0"
NCM_FUNCTION = "ncm.usb0"
LANG = "0x409"
STREAMING_MAXPACKET = 3072  # high-speed: 3 x 1024-byte packets per microframe, ~24 MB/s
BCD_UVC = 0x0110  # UVC 1.1: 34-byte probe/commit, understood by every host
SERIAL_PATHS = (Path("/proc/device-tree/serial-number"),
                Path("/sys/firmware/devicetree/base/serial-number"))
MACHINE_ID_PATHS = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"),
                    Path("/sys/class/dmi/id/product_uuid"))

CONFIGFS_DIR_NAMES: dict[Encoding, str] = {"mjpeg": "mjpeg/m", "yuyv": "uncompressed/u"}


class GadgetError(RuntimeError):
    """The gadget cannot be built or removed; the message says which step and why."""


@dataclass(frozen=True)
class UsbIdentity:
    vendor_id: int
    product_id: int
    manufacturer: str
    product: str
    serial_number: str


@dataclass(frozen=True)
class GadgetSpec:
    """Everything `gadget up` builds; compared field by field with what configfs holds."""

    identity: UsbIdentity
    formats: tuple[VideoFormat, ...]
    usb_networking: bool


# --- inputs ------------------------------------------------------------------------------------

def read_usb_identity(fleet_file: Path | None) -> UsbIdentity:
    """The fleet file's [usb] table (every key optional), with this board's serial by default.
    Only that table is read: a mistake elsewhere in the fleet file must not take the webcam down."""
    try:
        usb = fleet.read_table(fleet_file, "usb")
    except fleet.FleetError as exc:
        raise GadgetError(str(exc)) from None
    return UsbIdentity(usb.vendor_id, usb.product_id, usb.manufacturer, usb.product,
                       usb.serial_number or device_serial())


def device_serial(serial_paths: tuple[Path, ...] = SERIAL_PATHS,
                  id_paths: tuple[Path, ...] = MACHINE_ID_PATHS) -> str:
    """The Pi's own serial number; elsewhere a stable 16-hex-digit id derived from the machine id
    (or, on a machine without one, the firmware's DMI system UUID)."""
    for path in serial_paths:
        try:
            return fleet.normalize_serial(path.read_bytes().decode("ascii"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
    for path in id_paths:
        try:
            seed = path.read_text().strip()
        except OSError:
            continue
        if seed:
            # Hashed so the machine id itself (a secret-ish value) is not broadcast over USB.
            return hashlib.sha256(f"blurcam-usb-serial:{seed}".encode()).hexdigest()[:16]
    raise GadgetError(f"no serial number: none of {[str(p) for p in serial_paths + id_paths]} "
                      "is readable; set serial_number in the fleet file's [usb] table")


def wanted_spec(identity: UsbIdentity, resolutions: list[str] | tuple[str, ...], usb_networking: bool) -> GadgetSpec:
    return GadgetSpec(identity, offered_formats(resolutions), usb_networking)


# --- small configfs helpers --------------------------------------------------------------------

def _write(path: Path, value: str | int) -> None:
    try:
        path.write_text(f"{value}\n")
    except OSError as exc:
        raise GadgetError(f"writing {value!r} to {path}: {exc.strerror}") from None


def _read(path: Path) -> str:
    return path.read_text().strip()


def _mkdir(path: Path) -> Path:
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise GadgetError(f"creating {path}: {exc.strerror}") from None
    return path


def _link(target: Path, link: Path) -> None:
    try:
        link.symlink_to(target)
    except FileExistsError:
        pass
    except OSError as exc:
        raise GadgetError(f"linking {link} -> {target}: {exc.strerror}") from None


def _mac(serial: str, role: str) -> str:
    """A stable locally administered MAC for the NCM link (same on every boot of this device)."""
    digest = hashlib.sha256(f"{serial}:{role}".encode()).digest()
    octets = [(digest[0] & 0xFC) | 0x02, *digest[1:6]]
    return ":".join(f"{b:02x}" for b in octets)


# --- build -------------------------------------------------------------------------------------

def _build_uvc(function: Path, formats: tuple[VideoFormat, ...]) -> None:
    _write(function / "streaming_maxpacket", STREAMING_MAXPACKET)
    _write(function / "streaming_interval", 1)
    _write(function / "function_name", "BlurCam")
    header = _mkdir(function / "control/header/h")
    _write(header / "bcdUVC", f"0x{BCD_UVC:04x}")
    for speed in ("fs", "ss"):
        _link(header, function / "control/class" / speed / "h")
    _advertise_controls(function)
    streaming_header = _mkdir(function / "streaming/header/h")
    for fmt in formats:
        fmt_dir = function / "streaming" / CONFIGFS_DIR_NAMES[fmt.encoding]
        _mkdir(fmt_dir.parent)
        _mkdir(fmt_dir)
        for frame in fmt.frames:  # creation order is bFrameIndex order
            _build_frame(_mkdir(fmt_dir / frame.size), frame)
        _link(fmt_dir, streaming_header / fmt_dir.name)  # link order is bFormatIndex order
    for speed in ("fs", "hs", "ss"):
        _link(streaming_header, function / "streaming/class" / speed / "h")


def _build_frame(frame_dir: Path, frame: FrameSize) -> None:
    _write(frame_dir / "wWidth", frame.width)
    _write(frame_dir / "wHeight", frame.height)
    _write(frame_dir / "dwMaxVideoFrameBufferSize", frame.max_frame_size)
    fastest, slowest = min(frame.intervals), max(frame.intervals)
    _write(frame_dir / "dwMinBitRate", frame.max_frame_size * 8 * 10_000_000 // slowest)
    _write(frame_dir / "dwMaxBitRate", frame.max_frame_size * 8 * 10_000_000 // fastest)
    _write(frame_dir / "dwFrameInterval", "\n".join(str(i) for i in frame.intervals))
    _write(frame_dir / "dwDefaultFrameInterval", frame.default_interval)


def _bitmap_text(bitmap: bytes) -> str:
    return "\n".join(str(b) for b in bitmap)


def _read_bitmap(path: Path) -> bytes:
    return bytes(int(x, 0) for x in _read(path).split())


def _advertise_controls(function: Path) -> None:
    """Advertise exactly the controls the userspace answers. Kernels before 6.3 have read-only
    bmControls with fixed defaults (brightness; auto-exposure mode): then the userspace answers
    those instead (requests.controls_from_bitmaps), so nothing advertised goes unanswered."""
    for unit, path in (("camera", function / "control/terminal/camera/default/bmControls"),
                       ("processing", function / "control/processing/default/bmControls")):
        current = _read_bitmap(path)
        wanted = requests.bm_controls(requests.WANTED_CONTROLS, unit, len(current))
        if current == wanted:
            continue
        try:
            path.write_text(_bitmap_text(wanted) + "\n")
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EINVAL):
                raise GadgetError(f"writing {path}: {exc.strerror}") from None


def _build(gadget: Path, spec: GadgetSpec, udc: str) -> None:
    ident = spec.identity
    _mkdir(gadget)
    _write(gadget / "idVendor", f"0x{ident.vendor_id:04x}")
    _write(gadget / "idProduct", f"0x{ident.product_id:04x}")
    _write(gadget / "bcdDevice", "0x0100")
    _write(gadget / "bcdUSB", "0x0200")
    # Miscellaneous / common class / interface association: what Windows needs for a
    # composite device whose webcam spans two interfaces.
    _write(gadget / "bDeviceClass", "0xef")
    _write(gadget / "bDeviceSubClass", "0x02")
    _write(gadget / "bDeviceProtocol", "0x01")
    strings = _mkdir(gadget / "strings" / LANG)
    _write(strings / "manufacturer", ident.manufacturer)
    _write(strings / "product", ident.product)
    _write(strings / "serialnumber", ident.serial_number)
    config = _mkdir(gadget / "configs/c.1")
    _write(config / "MaxPower", 500)
    _write(_mkdir(config / "strings" / LANG) / "configuration", "Webcam")
    uvc = _mkdir(gadget / "functions" / UVC_FUNCTION)
    _build_uvc(uvc, spec.formats)
    _link(uvc, config / UVC_FUNCTION)
    if spec.usb_networking:
        ncm = _mkdir(gadget / "functions" / NCM_FUNCTION)
        _write(ncm / "dev_addr", _mac(ident.serial_number, "device"))
        _write(ncm / "host_addr", _mac(ident.serial_number, "host"))
        _link(ncm, config / NCM_FUNCTION)
    _write(gadget / "UDC", udc)


def pick_udc(wanted: str | None = None, udc_class: Path = UDC_CLASS) -> str:
    available = sorted(p.name for p in udc_class.iterdir()) if udc_class.is_dir() else []
    if wanted:
        if wanted not in available:
            raise GadgetError(f"USB device controller {wanted!r} not found (available: {available or 'none'})")
        return wanted
    if not available:
        raise GadgetError(f"no USB device controller in {udc_class}: is dwc2 enabled (dtoverlay=dwc2) "
                          "and the Pi's data USB port used?")
    return available[0]


def gadget_up(spec: GadgetSpec, udc: str | None = None, root: Path = CONFIGFS_GADGETS,
              name: str = GADGET_NAME) -> str:
    """Make the gadget match `spec` and bind it. Returns 'unchanged' or 'built'."""
    gadget = root / name
    chosen = pick_udc(udc or (_bound_udc(gadget) if gadget.exists() else None) or None)
    if gadget.exists() and read_spec(gadget) == spec and _bound_udc(gadget) == chosen:
        return "unchanged"
    if gadget.exists():
        gadget_down(root, name)
    try:
        _build(gadget, spec, chosen)
    except GadgetError:
        gadget_down(root, name)  # no half-built gadget left behind
        raise
    return "built"


def _bound_udc(gadget: Path) -> str:
    try:
        return _read(gadget / "UDC")
    except OSError:
        return ""


# --- teardown ----------------------------------------------------------------------------------

def gadget_down(root: Path = CONFIGFS_GADGETS, name: str = GADGET_NAME) -> bool:
    """Unbind and remove the gadget, whatever state it is in. Returns whether one existed."""
    gadget = root / name
    if not gadget.exists():
        return False
    if _bound_udc(gadget):
        _write(gadget / "UDC", "")
    links = [Path(d) / n for d, dirs, files in os.walk(gadget) for n in dirs + files
             if (Path(d) / n).is_symlink()]
    # Configuration links first (they hold the functions), then the class links (they hold the
    # headers), then the header -> format links.
    links.sort(key=lambda p: (0 if "/configs/" in str(p) else 1 if "/class/" in str(p) else 2))
    for link in links:
        try:
            link.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise GadgetError(f"removing {link}: {exc.strerror}") from None
    dirs = [Path(d) for d, _, _ in os.walk(gadget, topdown=False)]
    for d in dirs:
        try:
            d.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Default groups (control/header, streaming/class/fs, ...) cannot be removed on
            # their own; they disappear with the directory that owns them.
            if exc.errno not in (errno.EPERM, errno.ENOTEMPTY, errno.EBUSY, errno.EACCES):
                raise GadgetError(f"removing {d}: {exc.strerror}") from None
    if gadget.exists():
        left = sorted(str(p.relative_to(gadget)) for p in gadget.rglob("*") if p.is_dir())[:8]
        raise GadgetError(f"could not remove {gadget}; left: {left}")
    return True


# --- read back ---------------------------------------------------------------------------------

def read_formats(function: Path) -> tuple[VideoFormat, ...]:
    """The formats as configfs holds them, with the indexes the kernel gave them."""
    formats = []
    for encoding, sub in CONFIGFS_DIR_NAMES.items():
        fmt_dir = function / "streaming" / sub
        if not fmt_dir.is_dir():
            continue
        frames = []
        for frame_dir in (p for p in fmt_dir.iterdir() if p.is_dir()):
            intervals = tuple(sorted(int(x) for x in _read(frame_dir / "dwFrameInterval").split()))
            frames.append(FrameSize(
                index=int(_read(frame_dir / "bFrameIndex")),
                width=int(_read(frame_dir / "wWidth")),
                height=int(_read(frame_dir / "wHeight")),
                intervals=intervals,
                default_interval=int(_read(frame_dir / "dwDefaultFrameInterval")),
                max_frame_size=int(_read(frame_dir / "dwMaxVideoFrameBufferSize"))))
        frames.sort(key=lambda f: f.index)
        formats.append(VideoFormat(int(_read(fmt_dir / "bFormatIndex")), encoding, tuple(frames)))
    formats.sort(key=lambda f: f.index)
    return tuple(formats)


def read_spec(gadget: Path) -> GadgetSpec | None:
    try:
        strings = gadget / "strings" / LANG
        identity = UsbIdentity(
            vendor_id=int(_read(gadget / "idVendor"), 16),
            product_id=int(_read(gadget / "idProduct"), 16),
            manufacturer=_read(strings / "manufacturer"),
            product=_read(strings / "product"),
            serial_number=_read(strings / "serialnumber"))
        formats = read_formats(gadget / "functions" / UVC_FUNCTION)
        networking = (gadget / "configs/c.1" / NCM_FUNCTION).is_symlink()
        linked = (gadget / "configs/c.1" / UVC_FUNCTION).is_symlink()
    except (OSError, ValueError):
        return None
    return GadgetSpec(identity, formats, networking) if linked else None


def read_device(function: Path) -> requests.Device:
    """What the host is told, as the request handler needs it (interfaces are numbered at bind)."""
    control = function / "control"
    return requests.Device(
        formats=read_formats(function),
        controls=requests.controls_from_bitmaps(
            _read_bitmap(control / "terminal/camera/default/bmControls"),
            _read_bitmap(control / "processing/default/bmControls")),
        control_interface=int(_read(control / "bInterfaceNumber")),
        streaming_interface=int(_read(function / "streaming/bInterfaceNumber")),
        camera_terminal_id=int(_read(control / "terminal/camera/default/bTerminalID")),
        processing_unit_id=int(_read(control / "processing/default/bUnitID")),
        max_payload=int(_read(function / "streaming_maxpacket")),
        probe_length={0x0100: 26, 0x0110: 34, 0x0150: 48}.get(
            int(_read(control / "header/h/bcdUVC"), 0), 34),
    )


def gadget_status(root: Path = CONFIGFS_GADGETS, name: str = GADGET_NAME) -> dict:
    gadget = root / name
    if not gadget.exists():
        return {"gadget": "absent"}
    spec = read_spec(gadget)
    udc = _bound_udc(gadget)
    out: dict[str, Any] = {"gadget": "bound" if udc else "unbound", "udc": udc or None}
    if spec is None:
        out["gadget"] = "incomplete"
        return out
    out.update({
        "vendor_id": f"0x{spec.identity.vendor_id:04x}",
        "product_id": f"0x{spec.identity.product_id:04x}",
        "manufacturer": spec.identity.manufacturer,
        "product": spec.identity.product,
        "serial_number": spec.identity.serial_number,
        "usb_networking": spec.usb_networking,
        "formats": [f"{f.encoding.upper()} " + ", ".join(fr.size for fr in f.frames) for f in spec.formats],
    })
    if udc:
        try:
            out["udc_state"] = _read(UDC_CLASS / udc / "state")
        except OSError:
            pass
    return out


# --- command line ------------------------------------------------------------------------------

def main(args) -> int:
    """`blurcam gadget up|down|status` (args: action, state_dir, fleet_file, optional udc)."""
    import json
    import sys

    from appliance.settings import SettingsError, SettingsStore

    root = Path(getattr(args, "configfs", None) or CONFIGFS_GADGETS)
    try:
        if args.action == "status":
            print(json.dumps(gadget_status(root), indent=2))
            return 0
        if not root.is_dir():
            raise GadgetError(f"{root} missing: mount configfs and load libcomposite "
                              "(modprobe libcomposite)")
        if args.action == "down":
            print("gadget removed" if gadget_down(root) else "no gadget to remove")
            return 0
        settings = SettingsStore(args.state_dir, args.fleet_file).current
        spec = wanted_spec(read_usb_identity(args.fleet_file), tuple(settings.resolutions),
                           settings.usb_networking)
        outcome = gadget_up(spec, getattr(args, "udc", None), root)
        status = gadget_status(root)
        print(f"gadget {outcome}: {spec.identity.product} {status.get('vendor_id')}:"
              f"{status.get('product_id')} serial {spec.identity.serial_number} on UDC "
              f"{status.get('udc')}; networking {'on' if spec.usb_networking else 'off'}")
        return 0
    except (GadgetError, SettingsError, fleet.FleetError) as exc:
        print(f"blurcam gadget {args.action}: {exc}", file=sys.stderr)
        return 1
