"""The image controls: one row per control, read by every place that knows about them.

A row says everything about one control: its Settings field (name, range, default), the value at
which it leaves the picture alone, where a USB host finds it (UVC unit, selector, bmControls bit,
wire size) and which libcamera control carries it on a Pi camera (and how a value maps there).

Who reads the table:
  settings.py              one Settings field per row (range and default from here)
  adjust.py                software versions of the rows with software=True
  uvc/requests.py          the UVC controls advertised and answered (rows with `uvc`)
  uvc/device.py            the live values the host reads
  sources/picamera2.py     libcamera controls for the rows with `libcamera`
  web/views.py             one slider or choice per row on the settings page

Adding a control is one row here plus the code that applies it: a `to_libcamera` mapping for a
camera control, and/or a software version in adjust.py (software=True). Values are in the units
the UVC control uses on the wire, so the host, the page and the API see the same numbers. Two rows
may share one UVC control at different offsets (Pan/Tilt (Absolute) packs pan and tilt).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

CameraRange = tuple[Any, Any, Any]  # what libcamera advertises for a control: (min, max, default)


@dataclass(frozen=True)
class Uvc:
    """Where a control sits in the UVC descriptors and requests (UVC 1.5 tables A-12, A-13)."""

    unit: Literal["camera", "processing"]  # the camera terminal or the processing unit
    selector: int
    bit: int  # its bit in that entity's bmControls
    size: int = 2  # bytes of this value on the wire
    signed: bool = False
    offset: int = 0  # where this value starts when several rows share one control
    resolution: int = 1  # GET_RES: the step (for a mode bitmap, the supported modes)


@dataclass(frozen=True)
class ImageControl:
    """One image control. Ranges and values are in the control's UVC units."""

    name: str  # the Settings field; also the API and fleet-file key
    label: str  # on the settings page
    minimum: int
    maximum: int
    default: int
    neutral: int  # the value at which the control leaves the picture as the camera gives it
    uvc: Uvc | None = None
    libcamera: str | None = None  # the libcamera control that carries it on a camera that has it
    # Settings value and the camera's advertised (min, max, default) -> the libcamera value.
    to_libcamera: Callable[[int, CameraRange], Any] | None = None
    software: bool = False  # adjust.py applies it when the camera does not
    crop: bool = False  # the framing stage applies it as a crop (appliance/framing.py), on any camera
    choices: Mapping[int, str] | None = None  # only these values (mode-like controls), with labels
    hint: str = ""
    # (control, value): this one acts only while that control has that value, e.g. the exposure
    # time only with manual exposure. The camera is not sent it otherwise; the page dims it.
    applies_when: tuple[str, int] | None = None

    def accepts(self, value: int) -> bool:
        if self.choices is not None:
            return value in self.choices
        return self.minimum <= value <= self.maximum

    def allowed(self) -> str:
        """What the control accepts, for error messages."""
        if self.choices is not None:
            return "one of " + ", ".join(f"{v} ({label})" for v, label in self.choices.items())
        return f"allowed range {self.minimum}..{self.maximum}"


# --- how Settings values map onto libcamera's ----------------------------------------------------

def per_hundred(value: int, _camera: CameraRange) -> float:
    """-100..100 -> -1..1, 0..200 -> 0..2 (100 is libcamera's neutral 1.0)."""
    return value / 100.0


def around_camera_default(value: int, camera: CameraRange) -> float:
    """0..100..200 -> the camera's min..default..max (100 keeps the camera's own default)."""
    lo, hi, default = camera
    default = lo if default is None else default
    if value <= 100:
        return lo + (default - lo) * value / 100.0
    return default + (hi - default) * (value - 100) / 100.0


def tenth(value: int, _camera: CameraRange) -> float:
    return value / 10.0


def hundredth(value: int, _camera: CameraRange) -> float:
    return value / 100.0


# libcamera's AwbMode presets (AwbIncandescent .. AwbCloudy) by the colour temperature they stand for.
AWB_PRESETS = ((2900, 1), (3600, 2), (4800, 3), (6000, 5), (99999, 6))


def awb_preset(kelvin: int, _camera: CameraRange) -> int:
    """A manual colour temperature -> the Pi's nearest white-balance preset (it has no Kelvin control)."""
    return next(mode for limit, mode in AWB_PRESETS if kelvin < limit)


def flicker(value: int, _camera: CameraRange) -> dict[str, int]:
    """UVC power line frequency (0 off, 1 50 Hz, 2 60 Hz) -> AeFlickerMode and its period in µs:
    exposure in whole periods of the lights' flicker (twice the mains frequency)."""
    if value == 0:
        return {"AeFlickerMode": 0}
    return {"AeFlickerMode": 1, "AeFlickerPeriod": 10000 if value == 1 else 8333}


# --- the table -----------------------------------------------------------------------------------

CONTROLS: tuple[ImageControl, ...] = (
    ImageControl("brightness", "Brightness", -100, 100, 0, 0,
                 Uvc("processing", 0x02, 0, signed=True), "Brightness", per_hundred, software=True),
    ImageControl("contrast", "Contrast", 0, 200, 100, 100,
                 Uvc("processing", 0x03, 1), "Contrast", per_hundred, software=True),
    ImageControl("saturation", "Saturation", 0, 200, 100, 100,
                 Uvc("processing", 0x07, 3), "Saturation", per_hundred, software=True),
    ImageControl("sharpness", "Sharpness", 0, 200, 100, 100,
                 Uvc("processing", 0x08, 4), "Sharpness", around_camera_default, software=True),
    # The camera's own controls (a Pi camera through libcamera): nothing can do them in software,
    # so a camera without them shows them as unavailable. Values are the UVC ones.
    ImageControl("exposure_mode", "Exposure", 1, 2, 2, 2,
                 Uvc("camera", 0x02, 1, size=1, resolution=0x03), "AeEnable", lambda v, _c: v == 2,
                 choices={2: "Auto", 1: "Manual"}),
    ImageControl("exposure_time", "Exposure time", 1, 3333, 200, 200,
                 Uvc("camera", 0x04, 3, size=4), "ExposureTime", lambda v, _c: v * 100,
                 hint="In 0.1 ms (200 = 1/50 s), with manual exposure.", applies_when=("exposure_mode", 1)),
    ImageControl("exposure_compensation", "Exposure compensation", -20, 20, 0, 0,
                 None, "ExposureValue", tenth,
                 hint="Brighter or darker than automatic exposure, in tenths of a stop.",
                 applies_when=("exposure_mode", 2)),
    ImageControl("white_balance_auto", "White balance", 0, 1, 1, 1,
                 Uvc("processing", 0x0B, 12, size=1), "AwbMode", lambda _v, _c: 0,
                 choices={1: "Auto", 0: "Preset"}, applies_when=("white_balance_auto", 1)),
    ImageControl("white_balance_temperature", "Colour temperature", 2500, 7500, 5000, 5000,
                 Uvc("processing", 0x0A, 6, resolution=100), "AwbMode", awb_preset,
                 hint="Kelvin: 2800 bulbs, 3200 halogen, 4000 office lights, 5500 daylight, "
                      "6500 cloudy sky.", applies_when=("white_balance_auto", 0)),
    ImageControl("power_line_frequency", "Anti-flicker", 0, 2, 0, 0,
                 Uvc("processing", 0x05, 10, size=1), "AeFlickerMode", flicker,
                 choices={0: "Off", 1: "50 Hz", 2: "60 Hz"},
                 hint="The mains frequency where you are, against banding under lights."),
    ImageControl("focus_auto", "Focus", 0, 1, 1, 1,
                 Uvc("camera", 0x08, 17, size=1), "AfMode", lambda v, _c: 2 if v else 0,
                 choices={1: "Auto (continuous)", 0: "Manual"}),
    ImageControl("focus_position", "Focus distance", 0, 1000, 100, 100,
                 Uvc("camera", 0x06, 5), "LensPosition", hundredth,
                 hint="In 1/100 dioptre: 0 far away, 100 at 1 m, 200 at 50 cm, 500 at 20 cm.",
                 applies_when=("focus_auto", 0)),
    # Zoom and pan/tilt crop the picture (on the sensor where the camera can, else in software:
    # appliance/framing.py) while auto-framing is off. Zoom is in hundredths (100 = 1x, 300 = 3x);
    # pan and tilt in arc seconds, as UVC has them: the whole travel of the crop is -10..10 degrees.
    ImageControl("zoom", "Zoom", 100, 300, 100, 100, Uvc("camera", 0x0B, 9, resolution=10),
                 hint="In hundredths (200 = 2x); used when auto-framing is off.", crop=True),
    ImageControl("pan", "Pan", -36000, 36000, 0, 0,
                 Uvc("camera", 0x0D, 11, size=4, signed=True, offset=0, resolution=3600),
                 hint="Moves a zoomed-in picture left and right.", crop=True),
    ImageControl("tilt", "Tilt", -36000, 36000, 0, 0,
                 Uvc("camera", 0x0D, 11, size=4, signed=True, offset=4, resolution=3600),
                 hint="Moves a zoomed-in picture up and down.", crop=True),
)

BY_NAME: dict[str, ImageControl] = {c.name: c for c in CONTROLS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
NEUTRAL: dict[str, int] = {c.name: c.neutral for c in CONTROLS}


def values_of(settings: Any) -> dict[str, int]:
    """The image-control values of a Settings (as a source's set_controls() takes them)."""
    return {name: getattr(settings, name) for name in NAMES}


def libcamera_values(values: Mapping[str, int], advertised: Mapping[str, CameraRange]) -> dict[str, Any]:
    """libcamera controls for `values` (Settings units), limited to the controls the camera
    advertises (name -> (min, max, default)) and clamped to their ranges."""
    out: dict[str, Any] = {}
    for c in CONTROLS:
        if c.name not in values or c.libcamera is None or c.libcamera not in advertised or c.to_libcamera is None:
            continue
        if c.applies_when is not None and values.get(c.applies_when[0]) != c.applies_when[1]:
            continue
        camera = advertised[c.libcamera]
        value = c.to_libcamera(values[c.name], camera)
        if isinstance(value, dict):  # a setting that takes several libcamera controls
            out.update({k: v for k, v in value.items() if k in advertised})
            continue
        lo, hi = camera[0], camera[1]
        if isinstance(value, (int, float)) and lo is not None and hi is not None:
            value = min(max(value, lo), hi)
        out[c.libcamera] = value
    return out


def applied_by_camera(advertised: Mapping[str, CameraRange]) -> frozenset[str]:
    """The controls a camera with these libcamera controls applies itself."""
    return frozenset(c.name for c in CONTROLS if c.libcamera is not None and c.libcamera in advertised)


def uvc_groups(controls: tuple[ImageControl, ...] = CONTROLS) -> dict[tuple[str, int], tuple[ImageControl, ...]]:
    """The rows with a UVC place, grouped by (unit, selector): one group is one UVC control."""
    groups: dict[tuple[str, int], list[ImageControl]] = {}
    for c in controls:
        if c.uvc is not None:
            groups.setdefault((c.uvc.unit, c.uvc.selector), []).append(c)
    return {key: tuple(sorted(rows, key=lambda c: c.uvc.offset if c.uvc else 0))
            for key, rows in groups.items()}


def check_table(controls: tuple[ImageControl, ...] = CONTROLS) -> None:
    """Refuse a table a host could not use: duplicate names or bits, values that do not fit."""
    names = [c.name for c in controls]
    if len(set(names)) != len(names):
        raise ValueError(f"image controls: duplicate names in {names}")
    for c in controls:
        if not (c.minimum <= c.default <= c.maximum and c.minimum <= c.neutral <= c.maximum):
            raise ValueError(f"image control {c.name}: default/neutral outside {c.minimum}..{c.maximum}")
        if c.choices is not None and not {c.default, c.neutral} <= set(c.choices):
            raise ValueError(f"image control {c.name}: default/neutral not among its choices")
        if c.uvc is not None:
            bits = 8 * c.uvc.size
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if c.uvc.signed else (0, (1 << bits) - 1)
            if not lo <= c.minimum <= c.maximum <= hi:
                raise ValueError(f"image control {c.name}: its range does not fit {c.uvc.size} byte(s)")
    used_bits: set[tuple[str, int]] = set()
    for (unit, selector), rows in uvc_groups(controls).items():
        places = [row.uvc for row in rows if row.uvc is not None]
        if len({u.bit for u in places}) != 1 or (unit, places[0].bit) in used_bits:
            raise ValueError(f"image controls {[r.name for r in rows]}: {unit} selector {selector:#x} "
                             "needs one bmControls bit of its own")
        used_bits.add((unit, places[0].bit))
        for a, b in zip(places, places[1:]):
            if a.offset + a.size > b.offset:
                raise ValueError(f"image controls {[r.name for r in rows]} overlap in one UVC control")


check_table()
