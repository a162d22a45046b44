"""UVC class requests as pure functions: (device, state, setup packet) -> (new state, reply).

The kernel's f_uvc hands every class-specific control request on ep0 to userspace: first the
8-byte setup packet (UVC_EVENT_SETUP), then, for SET_CUR, the data stage (UVC_EVENT_DATA). Nothing
here touches a file descriptor, so every path, including malformed packets, is unit-tested with
recorded bytes. A request we cannot answer is stalled and the reason kept in the request error
code control, which is how the UVC spec tells the host why (uvcvideo reads it after a stall).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum

from appliance import controls
from appliance.controls import ImageControl
from appliance.stream import StreamFormat
from appliance.uvc.formats import FrameSize, VideoFormat, find_format, stream_format

# Request codes (UVC 1.5 table A-8).
SET_CUR = 0x01
GET_CUR = 0x81
GET_MIN = 0x82
GET_MAX = 0x83
GET_RES = 0x84
GET_LEN = 0x85
GET_INFO = 0x86
GET_DEF = 0x87
GET_REQUESTS = (GET_CUR, GET_MIN, GET_MAX, GET_RES, GET_LEN, GET_INFO, GET_DEF)

# Selectors.
VC_REQUEST_ERROR_CODE_CONTROL = 0x02
VS_PROBE_CONTROL = 0x01
VS_COMMIT_CONTROL = 0x02
VS_STREAM_ERROR_CODE_CONTROL = 0x06

# GET_INFO bits.
INFO_GET = 0x01
INFO_SET = 0x02

USB_DIR_IN = 0x80
USB_TYPE_MASK = 0x60
USB_TYPE_CLASS = 0x20
USB_RECIP_MASK = 0x1F
USB_RECIP_INTERFACE = 0x01

PROBE_LENGTHS = (26, 34, 48)  # UVC 1.0, 1.1, 1.5 probe/commit structures


class ErrorCode(IntEnum):
    """bRequestErrorCode values (UVC 1.5 section 4.2.1.2)."""

    NO_ERROR = 0x00
    NOT_READY = 0x01
    WRONG_STATE = 0x02
    POWER = 0x03
    OUT_OF_RANGE = 0x04
    INVALID_UNIT = 0x05
    INVALID_CONTROL = 0x06
    INVALID_REQUEST = 0x07
    INVALID_VALUE_WITHIN_RANGE = 0x08
    UNKNOWN = 0xFF


@dataclass(frozen=True)
class Setup:
    """A USB control setup packet."""

    request_type: int
    request: int
    value: int
    index: int
    length: int

    @classmethod
    def parse(cls, raw: bytes) -> Setup:
        if len(raw) < 8:
            raise ValueError(f"setup packet is {len(raw)} bytes, expected 8")
        return cls(*struct.unpack_from("<BBHHH", raw, 0))

    def pack(self) -> bytes:
        return struct.pack("<BBHHH", self.request_type, self.request, self.value, self.index,
                           self.length)

    @property
    def selector(self) -> int:
        return self.value >> 8

    @property
    def entity(self) -> int:
        return self.index >> 8

    @property
    def interface(self) -> int:
        return self.index & 0xFF


@dataclass(frozen=True)
class Control:
    """A camera-terminal or processing-unit control: one or more image controls (appliance/
    controls.py) packed in one request, e.g. pan and tilt in Pan/Tilt (Absolute)."""

    unit: str  # "camera" or "processing"
    selector: int
    bit: int  # bit in that entity's bmControls
    parts: tuple[ImageControl, ...]
    settable: bool = True  # False: answered, but a host's value never changes a setting

    @property
    def name(self) -> str:
        return "/".join(p.name for p in self.parts)

    @property
    def size(self) -> int:
        return max(self._place(p).offset + self._place(p).size for p in self.parts)

    @staticmethod
    def _place(part: ImageControl) -> controls.Uvc:
        assert part.uvc is not None
        return part.uvc

    def encode(self, values: Mapping[str, int]) -> bytes:
        out = bytearray(self.size)
        for p in self.parts:
            u = self._place(p)
            out[u.offset:u.offset + u.size] = values[p.name].to_bytes(u.size, "little", signed=u.signed)
        return bytes(out)

    def decode(self, raw: bytes) -> dict[str, int]:
        out = {}
        for p in self.parts:
            u = self._place(p)
            out[p.name] = int.from_bytes(raw[u.offset:u.offset + u.size], "little", signed=u.signed)
        return out

    def accepts(self, values: Mapping[str, int]) -> bool:
        return all(p.accepts(values[p.name]) for p in self.parts)

    def answer(self, request: int, current: Mapping[str, int]) -> bytes:
        """The data for GET_CUR/MIN/MAX/RES/DEF."""
        pick = {GET_CUR: lambda p: current.get(p.name, p.default),
                GET_MIN: lambda p: p.minimum,
                GET_MAX: lambda p: p.maximum,
                GET_RES: lambda p: self._place(p).resolution,
                GET_DEF: lambda p: p.default}[request]
        return self.encode({p.name: pick(p) for p in self.parts})


def _controls_from_table(rows: tuple[ImageControl, ...], settable: bool) -> tuple[Control, ...]:
    return tuple(Control(unit, selector, Control._place(parts[0]).bit, parts, settable)
                 for (unit, selector), parts in controls.uvc_groups(rows).items())


# What we advertise and answer: every image control with a UVC place.
WANTED_CONTROLS = _controls_from_table(controls.CONTROLS, settable=True)
# Auto-exposure mode: kernels before 6.3 hard-wire this bit in the camera terminal's bmControls.
# The camera only does automatic exposure, so the only mode offered and accepted is 'auto' (2).
# (An image-control row for the same selector takes its place.)
AE_MODE = Control("camera", 0x02, 1, (ImageControl(
    "auto_exposure_mode", "Auto exposure", 0, 0x02, 0x02, 0x02,
    controls.Uvc("camera", 0x02, 1, size=1, resolution=0x02), choices={0x02: "auto"}),), settable=False)
KNOWN_CONTROLS = WANTED_CONTROLS + (AE_MODE,)


def bm_controls(wanted: tuple[Control, ...], unit: str, size: int) -> bytes:
    """The bmControls bitmap that advertises exactly `wanted` controls of one entity."""
    bits = 0
    for c in wanted:
        if c.unit == unit:
            bits |= 1 << c.bit
    return bits.to_bytes(size, "little")


def controls_from_bitmaps(camera: bytes, processing: bytes) -> tuple[Control, ...]:
    """The controls a pair of bmControls bitmaps advertises; raises if one is unknown to us,
    because advertising a control we would not answer breaks hosts."""
    found = []
    for unit, bitmap in (("camera", camera), ("processing", processing)):
        bits = int.from_bytes(bitmap, "little")
        for bit in range(len(bitmap) * 8):
            if not bits & (1 << bit):
                continue
            control = next((c for c in KNOWN_CONTROLS if c.unit == unit and c.bit == bit), None)
            if control is None:
                raise ValueError(f"{unit} bmControls advertises bit {bit}, which we do not answer")
            found.append(control)
    return tuple(found)


@dataclass(frozen=True)
class Device:
    """What the gadget advertises: formats, interface numbers, entity IDs, controls."""

    formats: tuple[VideoFormat, ...]
    controls: tuple[Control, ...] = WANTED_CONTROLS
    control_interface: int = 0
    streaming_interface: int = 1
    camera_terminal_id: int = 1
    processing_unit_id: int = 2
    max_payload: int = 3072  # bytes per (micro)frame of the streaming endpoint
    probe_length: int = 34  # bcdUVC 1.1
    clock_frequency: int = 48_000_000

    def control(self, entity: int, selector: int) -> Control | None:
        unit = {self.camera_terminal_id: "camera", self.processing_unit_id: "processing"}.get(entity)
        return next((c for c in self.controls if c.unit == unit and c.selector == selector), None)


@dataclass(frozen=True)
class Probe:
    """The negotiated part of the probe/commit structure."""

    hint: int
    format_index: int
    frame_index: int
    interval: int


@dataclass(frozen=True)
class State:
    probe: Probe
    commit: Probe
    values: dict[str, int]
    pending: Setup | None = None  # a SET_CUR whose data stage has not arrived yet
    error_code: ErrorCode = ErrorCode.NO_ERROR


@dataclass(frozen=True)
class Reply:
    """What to send back for a setup packet: `data` (for SET_CUR: wLength zero bytes, which tells
    f_uvc to receive the data stage) or None to stall."""

    data: bytes | None

    @property
    def stalled(self) -> bool:
        return self.data is None


STALL = Reply(None)


@dataclass(frozen=True)
class Effects:
    """What a data stage changed: a committed format and/or control values (Settings units)."""

    committed: StreamFormat | None = None
    changed: dict[str, int] = field(default_factory=dict)


def default_probe(device: Device) -> Probe:
    fmt = device.formats[0]
    frame = fmt.frames[0]
    return Probe(1, fmt.index, frame.index, frame.default_interval)


def initial_state(device: Device, values: dict[str, int]) -> State:
    """The state at connect: default probe, control values from the live settings."""
    probe = default_probe(device)
    known = {p.name: values.get(p.name, p.default) for c in device.controls for p in c.parts}
    return State(probe, probe, known)


def with_values(state: State, values: dict[str, int]) -> State:
    """Follow settings changed elsewhere (web page) so the host reads the live values."""
    merged = {name: values.get(name, old) for name, old in state.values.items()}
    return replace(state, values=merged)


def negotiate(device: Device, wanted: Probe) -> tuple[Probe, bool]:
    """Clamp a host's request to what is offered. Returns the probe and whether the format and
    frame indexes were in range (the interval is always rounded to the nearest offered one)."""
    # UVC numbers formats and frames 1..n, so the nearest offered index is the request clamped.
    fmt = min(device.formats, key=lambda f: abs(f.index - wanted.format_index))
    frame = min(fmt.frames, key=lambda f: abs(f.index - wanted.frame_index))
    in_range = fmt.index == wanted.format_index and frame.index == wanted.frame_index
    return Probe(wanted.hint, fmt.index, frame.index, frame.nearest_interval(wanted.interval)), in_range


def _lookup(device: Device, probe: Probe) -> tuple[VideoFormat, FrameSize]:
    fmt = find_format(device.formats, probe.format_index)
    assert fmt is not None
    frame = fmt.frame(probe.frame_index)
    assert frame is not None
    return fmt, frame


def encode_probe(device: Device, probe: Probe, length: int) -> bytes:
    """The probe/commit structure, `length` bytes (26/34/48), with the sizes filled in."""
    _, frame = _lookup(device, probe)
    out = bytearray(48)
    struct.pack_into("<HBBI", out, 0, probe.hint, probe.format_index, probe.frame_index,
                     probe.interval)
    struct.pack_into("<II", out, 18, frame.max_frame_size, device.max_payload)
    struct.pack_into("<IBBBB", out, 26, device.clock_frequency, 0x03, 1, 1, 1)
    return bytes(out[:length])


def decode_probe(raw: bytes) -> Probe:
    hint, fmt, frame, interval = struct.unpack_from("<HBBI", raw, 0)
    return Probe(hint, fmt, frame, interval)


def committed_frame(device: Device, state: State) -> FrameSize:
    return _lookup(device, state.commit)[1]


def committed_format(device: Device, state: State) -> StreamFormat:
    fmt, frame = _lookup(device, state.commit)
    return stream_format(fmt, frame, state.commit.interval)


def _stall(state: State, code: ErrorCode) -> tuple[State, Reply]:
    return replace(state, error_code=code, pending=None), STALL


def _ok(state: State, data: bytes) -> tuple[State, Reply]:
    return replace(state, error_code=ErrorCode.NO_ERROR), Reply(data)


def _info_or_len(state: State, setup: Setup, control_length: int) -> tuple[State, Reply]:
    """GET_INFO (1 byte: get and set supported) or GET_LEN (2 bytes) of a read-write control."""
    if setup.request == GET_INFO and setup.length == 1:
        return _ok(state, bytes([INFO_GET | INFO_SET]))
    if setup.request == GET_LEN and setup.length == 2:
        return _ok(state, control_length.to_bytes(2, "little"))
    return _stall(state, ErrorCode.INVALID_REQUEST)


def handle_setup(device: Device, state: State, setup: Setup) -> tuple[State, Reply]:
    """Answer one class request. Never raises: anything unanswerable is a stall plus error code."""
    if (setup.request_type & USB_TYPE_MASK) != USB_TYPE_CLASS or \
            (setup.request_type & USB_RECIP_MASK) != USB_RECIP_INTERFACE:
        return _stall(state, ErrorCode.INVALID_REQUEST)
    is_get = setup.request in GET_REQUESTS
    if not is_get and setup.request != SET_CUR:
        return _stall(state, ErrorCode.INVALID_REQUEST)
    if is_get != bool(setup.request_type & USB_DIR_IN):
        return _stall(state, ErrorCode.INVALID_REQUEST)
    if setup.interface == device.streaming_interface:
        return _streaming_request(device, state, setup)
    if setup.interface == device.control_interface:
        if setup.entity == 0:
            return _interface_request(state, setup, VC_REQUEST_ERROR_CODE_CONTROL)
        return _unit_request(device, state, setup)
    return _stall(state, ErrorCode.INVALID_UNIT)


def _interface_request(state: State, setup: Setup, error_selector: int) -> tuple[State, Reply]:
    """The error-code controls: read-only, one byte. Reading one is itself a successful request,
    so it reports the previous request's code and then resets it (UVC 1.5 section 4.2.1.2)."""
    if setup.selector != error_selector:
        return _stall(state, ErrorCode.INVALID_CONTROL)
    if setup.request == GET_CUR and setup.length == 1:
        code = state.error_code if error_selector == VC_REQUEST_ERROR_CODE_CONTROL else 0
        return _ok(state, bytes([code]))
    if setup.request == GET_INFO and setup.length == 1:
        return _ok(state, bytes([INFO_GET]))
    return _stall(state, ErrorCode.INVALID_REQUEST)


def _streaming_request(device: Device, state: State, setup: Setup) -> tuple[State, Reply]:
    if setup.entity != 0:
        return _stall(state, ErrorCode.INVALID_UNIT)
    if setup.selector == VS_STREAM_ERROR_CODE_CONTROL:
        return _interface_request(state, setup, VS_STREAM_ERROR_CODE_CONTROL)
    if setup.selector not in (VS_PROBE_CONTROL, VS_COMMIT_CONTROL):
        return _stall(state, ErrorCode.INVALID_CONTROL)
    is_probe = setup.selector == VS_PROBE_CONTROL
    if setup.request in (GET_INFO, GET_LEN):
        return _info_or_len(state, setup, device.probe_length)
    if setup.length not in PROBE_LENGTHS or setup.length > device.probe_length:
        return _stall(state, ErrorCode.INVALID_REQUEST)
    if setup.request == SET_CUR:
        return replace(state, pending=setup, error_code=ErrorCode.NO_ERROR), Reply(bytes(setup.length))
    if not is_probe and setup.request != GET_CUR:
        return _stall(state, ErrorCode.INVALID_REQUEST)  # commit has only CUR, INFO, LEN
    if setup.request == GET_CUR:
        probe = state.probe if is_probe else state.commit
    elif setup.request == GET_MAX:
        fmt = device.formats[-1]
        frame = fmt.frames[-1]
        probe = Probe(0, fmt.index, frame.index, max(frame.intervals))
    elif setup.request == GET_MIN:
        fmt = device.formats[0]
        frame = fmt.frames[0]
        probe = Probe(0, fmt.index, frame.index, min(frame.intervals))
    elif setup.request == GET_DEF:
        probe = default_probe(device)
    else:  # GET_RES: no field has a step other than 'any offered value'
        return _ok(state, bytes(setup.length))
    return _ok(state, encode_probe(device, probe, setup.length))


def _unit_request(device: Device, state: State, setup: Setup) -> tuple[State, Reply]:
    if setup.entity not in (device.camera_terminal_id, device.processing_unit_id):
        return _stall(state, ErrorCode.INVALID_UNIT)
    control = device.control(setup.entity, setup.selector)
    if control is None:
        return _stall(state, ErrorCode.INVALID_CONTROL)
    if setup.request in (GET_INFO, GET_LEN):
        return _info_or_len(state, setup, control.size)
    if setup.length != control.size:
        return _stall(state, ErrorCode.INVALID_REQUEST)
    if setup.request == SET_CUR:
        return replace(state, pending=setup, error_code=ErrorCode.NO_ERROR), Reply(bytes(setup.length))
    return _ok(state, control.answer(setup.request, state.values))


def handle_data(device: Device, state: State, data: bytes) -> tuple[State, Effects]:
    """Apply the data stage of the pending SET_CUR. The status stage has already been sent by the
    time userspace sees the data, so a bad value cannot stall: it is refused and the request
    error code says why."""
    setup = state.pending
    state = replace(state, pending=None)
    if setup is None:
        return replace(state, error_code=ErrorCode.WRONG_STATE), Effects()
    if len(data) != setup.length:
        return replace(state, error_code=ErrorCode.INVALID_REQUEST), Effects()
    if setup.interface == device.streaming_interface:
        wanted = decode_probe(data)
        probe, in_range = negotiate(device, wanted)
        if setup.selector == VS_PROBE_CONTROL:
            return replace(state, probe=probe, error_code=ErrorCode.NO_ERROR), Effects()
        if not in_range:
            return replace(state, error_code=ErrorCode.OUT_OF_RANGE), Effects()
        state = replace(state, commit=probe, error_code=ErrorCode.NO_ERROR)
        return state, Effects(committed=committed_format(device, state))
    control = device.control(setup.entity, setup.selector)
    assert control is not None  # checked at the setup stage
    decoded = control.decode(data)
    if not control.accepts(decoded):
        return replace(state, error_code=ErrorCode.OUT_OF_RANGE), Effects()
    values = {**state.values, **decoded}
    changed = decoded if control.settable else {}
    return replace(state, values=values, error_code=ErrorCode.NO_ERROR), Effects(changed=changed)
