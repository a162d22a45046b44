"""The appliance's settings: one validated schema, layered defaults < fleet file < user changes.

The field names are a public contract: the web API, the fleet config and the UVC controls all use
them. A rejected change raises SettingsError naming every bad field and leaves the saved file and
the running values untouched.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model,
                      field_validator)
from pydantic_core import PydanticCustomError

from appliance import controls
from appliance.storage import remove_durably, remove_stale_temp_files, set_aside, write_atomically

log = logging.getLogger(__name__)

Resolution = Literal["640x360", "640x480", "1280x720", "1920x1080"]
RESOLUTIONS: tuple[Resolution, ...] = get_args(Resolution)


class _FixedSettings(BaseModel):
    """Everything a user or a fleet operator can set, but the image controls (added below)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    if TYPE_CHECKING:  # the image controls' fields are made from the controls table at import
        def __getattr__(self, name: str) -> Any: ...

    effect: Literal["blur", "replace", "none", "privacy"] = "blur"
    blur_strength: int = Field(60, ge=1, le=100, description="how strongly the background is blurred")
    mask_threshold: float = Field(0.5, ge=0.05, le=0.95, description="model confidence that counts as person")
    edge_softness: float = Field(0.3, ge=0.0, le=1.0, description="0 = hard cut-out edge, 1 = very soft")
    temporal_smoothing: float = Field(0.6, ge=0.0, le=0.95, description="weight of the previous mask (anti-flicker)")
    # "auto": the landscape model for wide (16:9) streams, the general one for 4:3 (segment.model_for).
    model: Literal["auto", "general", "landscape"] = "auto"
    precision: Literal["int8", "float"] = "int8"
    mirror: bool = False
    jpeg_quality: int = Field(85, ge=30, le=98)
    resolutions: list[Resolution] = Field(
        default_factory=lambda: list(RESOLUTIONS), min_length=1, max_length=len(RESOLUTIONS),
        description="MJPEG frame sizes offered to the host, each once")
    # A built-in's name, a stored upload's file name (the daemon also checks that it exists), or ""
    # for the default built-in: backgrounds.check_name is the one rule (no path, no dot file), and
    # its refusal says what is accepted.
    background: str = Field("", max_length=128,
                            description="a built-in background's name, an uploaded picture's file "
                                        "name, or empty for the default built-in")

    @field_validator("resolutions")
    @classmethod
    def _each_resolution_once(cls, value: list[str]) -> list[str]:
        twice = sorted({r for r in value if value.count(r) > 1})
        if twice:
            raise ValueError(f"lists {', '.join(twice)} more than once")
        return value
    privacy_text: str = Field("Camera paused", max_length=60)
    # Auto-framing: a virtual camera that keeps the person framed (off = the whole picture).
    framing: Literal["off", "auto"] = "off"
    framing_zoom: float = Field(2.0, ge=1.0, le=3.0, description="the most auto-framing may zoom in")
    framing_speed: Literal["slow", "normal", "fast"] = "normal"
    inference_threads: int = Field(1, ge=1, le=4)
    usb_networking: bool = False

    @field_validator("background")
    @classmethod
    def _known_background(cls, value: str) -> str:
        from appliance import backgrounds
        try:
            backgrounds.check_name(value)
        except ValueError as exc:
            raise PydanticCustomError("background_name", str(exc)) from None
        return value

    @field_validator("privacy_text")
    @classmethod
    def _drawable(cls, value: str) -> str:
        """Only text the card can draw is saved; emoji are left out (the page says so)."""
        from appliance import text
        try:
            return text.check(value).text
        except text.TextError as exc:
            raise PydanticCustomError("undrawable", str(exc)) from None


def _control_field(control: controls.ImageControl) -> tuple[Any, Any]:
    """The Settings field of one image control: an int in the row's range (or among its choices)."""
    kind: Any = int
    if control.choices is not None:
        choices = control.choices

        def among_choices(value: int) -> int:
            if value not in choices:
                raise ValueError("not an allowed value")
            return value
        kind = Annotated[int, AfterValidator(among_choices)]
    return kind, Field(control.default, ge=control.minimum, le=control.maximum,
                       description=control.label)


# One field per image control in appliance/controls.py, so a new control is one row there. The
# type checker sees only the fixed fields: code reads the image controls by name from the table.
if TYPE_CHECKING:
    Settings = _FixedSettings
else:
    Settings = create_model("Settings", __base__=_FixedSettings, __module__=__name__,
                            __doc__="Everything a user or a fleet operator can set.",
                            **{c.name: _control_field(c) for c in controls.CONTROLS})

FIELDS = tuple(Settings.model_fields)


def image_controls(settings: Settings) -> dict[str, int]:
    """The camera image controls of a Settings, as a source's set_controls() takes them."""
    return controls.values_of(settings)


class SettingsError(ValueError):
    """A rejected settings change. `errors` maps each bad field to a sentence saying why."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _allowed(field: str) -> str:
    """A short description of what a field accepts, for error messages."""
    if field in controls.BY_NAME:
        return controls.BY_NAME[field].allowed()
    info = Settings.model_fields[field]
    lo = hi = None
    for m in info.metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    ann = info.annotation
    if lo is not None and hi is not None:
        return f"allowed range {lo}..{hi}"
    if getattr(ann, "__origin__", None) is Literal:
        return "one of " + ", ".join(map(str, get_args(ann)))
    if field == "resolutions":
        return "a non-empty list of different sizes from " + ", ".join(RESOLUTIONS)
    return f"a {getattr(ann, '__name__', ann)}"


def _errors_from(exc: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "settings"
        if err["type"] == "extra_forbidden":
            out[field] = "unknown setting"
            continue
        got = repr(err.get("input"))
        if len(got) > 80:  # the error goes back in one control-socket reply: keep it short
            got = got[:60] + f"... ({len(got)} characters)"
        msg = err["msg"].removeprefix("Value error, ")
        if field in Settings.model_fields:
            msg = f"{msg} ({_allowed(field)}; got {got})"
        out.setdefault(field, msg)
    return out


def validate(values: dict[str, Any]) -> Settings:
    """Build Settings from a full or partial dict, raising SettingsError on any bad field."""
    if not isinstance(values, dict):
        raise SettingsError({"settings": "expected an object of setting names to values"})
    try:
        return Settings.model_validate(values, strict=True)
    except ValidationError as exc:
        raise SettingsError(_errors_from(exc)) from None


def merge(base: Settings, changes: dict[str, Any]) -> Settings:
    """Apply a partial change to `base`; unknown fields and bad values are errors."""
    if not isinstance(changes, dict):
        raise SettingsError({"settings": "expected an object of setting names to values"})
    return validate({**base.model_dump(), **changes})


def load_fleet_defaults(path: Path | None) -> dict[str, Any]:
    """The `[settings]` table of the fleet file (missing file = no overrides); FleetError names
    each bad field."""
    from appliance import fleet  # imported here: fleet validates its [settings] with this module
    return fleet.read_table(path, "settings")


class SettingsStore:
    """The live settings: validated, persisted, and observable.

    Only the user's own changes are written to `settings.json`, so a later fleet update of a
    default still reaches fields the user never touched.
    """

    def __init__(self, state_dir: Path, fleet_file: Path | None = None):
        self.path = Path(state_dir) / "settings.json"
        remove_stale_temp_files(self.path.parent, (self.path.name,))  # left by a power cut
        self._lock = threading.Lock()
        self._listeners: list = []
        self._fleet = load_fleet_defaults(fleet_file)
        self._user = self._read_user_file()
        self._current = validate({**self._fleet, **self._user})

    def _read_user_file(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            user = json.loads(self.path.read_text())
            validate({**self._fleet, **user})
            return user
        except (ValueError, SettingsError) as exc:
            # A damaged file must not brick the camera: keep it for inspection, run on defaults.
            kept = set_aside(self.path, self.path.with_suffix(".json.broken"))
            log.error("settings file %s unreadable (%s); %s", self.path, exc, kept)
            return {}

    @property
    def current(self) -> Settings:
        return self._current

    def subscribe(self, callback) -> None:
        """Call `callback(old, new)` after every accepted change."""
        self._listeners.append(callback)

    def update(self, changes: dict[str, Any]) -> Settings:
        """Validate, save, then apply. A bad value raises SettingsError and a failed save raises
        StorageError; either way the file and the running values stay as they were."""
        with self._lock:
            new = merge(self._current, changes)  # raises before anything is touched
            user = {**self._user, **{k: getattr(new, k) for k in changes}}
            write_atomically(self.path, json.dumps(user, indent=2, sort_keys=True).encode(),
                             what="settings")
            # Only now, with the file safely on disk, do the running values change.
            old, self._user, self._current = self._current, user, new
        self._notify(old, new)
        return new

    def reset(self) -> Settings:
        """Forget every user change (factory reset): back to the defaults and the fleet file."""
        with self._lock:
            new = validate(dict(self._fleet))
            remove_durably(self.path, what="settings")
            remove_durably(self.path.with_suffix(".json.broken"), what="settings")
            old, self._user, self._current = self._current, {}, new
        self._notify(old, new)
        return new

    def _notify(self, old: Settings, new: Settings) -> None:
        for cb in self._listeners:
            cb(old, new)
