"""The settings page itself. Controls are described once here; ranges come from the Settings schema
and the image controls (the "Picture" section) from their table in appliance/controls.py."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from flask import Blueprint, current_app, render_template

from appliance import __version__, controls
from appliance.control import PREVIEW_VIEWS, ControlError
from appliance.settings import RESOLUTIONS, Settings

bp = Blueprint("views", __name__)

# The page's script converts a value by its setting's type (keyed by the annotation: any object).
_SCRIPT_VALUE_TYPES: dict[object, str] = {int: "int", float: "float", bool: "bool"}


@dataclass(frozen=True)
class Control:
    """One setting on the page."""

    name: str
    label: str
    kind: Literal["range", "choice", "toggle", "text", "multi"]
    hint: str = ""
    options: dict[str, str] = field(default_factory=dict)  # value -> label, for choice/multi
    # For the camera's own controls (appliance/controls.py): shown as unavailable on a camera
    # without it, and dimmed unless the control it depends on has the value it needs.
    needs_camera: bool = False
    applies_when: tuple[str, int] | None = None

    @classmethod
    def from_row(cls, row: controls.ImageControl) -> Control:
        return cls(row.name, row.label, "range" if row.choices is None else "choice", row.hint,
                   options={str(v): label for v, label in (row.choices or {}).items()},
                   needs_camera=not (row.software or row.crop),
                   applies_when=row.applies_when if row.applies_when and row.applies_when[0] != row.name else None)

    @property
    def minimum(self) -> float | None:
        return self._bound("ge")

    @property
    def maximum(self) -> float | None:
        return self._bound("le")

    @property
    def step(self) -> str:
        return "1" if Settings.model_fields[self.name].annotation is int else "0.05"

    @property
    def value_type(self) -> str:
        """How the page's script converts the control's value before sending it."""
        ann = Settings.model_fields[self.name].annotation
        return _SCRIPT_VALUE_TYPES.get(ann, "list" if self.kind == "multi" else "str")

    @property
    def max_length(self) -> int | None:
        return self._bound("max_length")

    def _bound(self, attr: str):
        for meta in Settings.model_fields[self.name].metadata:
            if getattr(meta, attr, None) is not None:
                return getattr(meta, attr)
        return None


EFFECT_CONTROLS = [
    Control("effect", "Effect", "choice", options={
        "blur": "Blur", "replace": "Replace", "privacy": "Privacy card", "none": "Off"}),
    Control("blur_strength", "Blur strength", "range", "How strongly the background is blurred."),
    Control("privacy_text", "Privacy card text", "text", "Shown instead of the picture."),
]

# (title, id, controls): the cards after the effect, the background picker and the presets.
SECTIONS: list[tuple[str, str, list[Control]]] = [
    ("Framing", "framing", [
        Control("framing", "Auto-framing", "choice",
                "Keeps you framed, head and shoulders, as you move; holds still when you do.",
                options={"off": "Off", "auto": "Auto"}),
        Control("framing_zoom", "Maximum zoom", "range"),
        Control("framing_speed", "Speed", "choice", options={
            "slow": "Slow", "normal": "Normal", "fast": "Fast"}),
        # The host's Zoom and Pan/Tilt, for when auto-framing is off: crops, so every camera has them.
        *(Control.from_row(c) for c in controls.CONTROLS if c.crop),
    ]),
    ("Person outline", "outline", [
        Control("mask_threshold", "Person threshold", "range",
                "Higher keeps less of the picture as “person”."),
        Control("edge_softness", "Edge softness", "range", "0 is a hard cut-out edge."),
        Control("temporal_smoothing", "Temporal smoothing", "range",
                "Steadier outline; too high lags behind quick moves."),
    ]),
    ("Picture", "picture", [
        *(Control.from_row(c) for c in controls.CONTROLS if c.software),
        Control("mirror", "Mirror the picture", "toggle"),
    ]),
    # What only the camera itself can do (a Pi camera through libcamera); the computer sees the
    # same controls as the webcam's own (UVC).
    ("Camera", "camera", [Control.from_row(c) for c in controls.CONTROLS if not (c.software or c.crop)]),
    ("Model", "model", [
        Control("model", "Segmentation model", "choice", options={
            "auto": "Automatic (landscape for 16:9 formats)", "general": "General",
            "landscape": "Landscape (faster)"}),
        Control("precision", "Precision", "choice", options={
            "int8": "int8 (faster)", "float": "float (finer edges)"}),
        Control("inference_threads", "Inference threads", "range"),
    ]),
    ("USB output", "usb", [
        Control("resolutions", "Offered resolutions", "multi",
                "Sizes the computer may pick. Changes apply when it next connects.",
                options={r: r.replace("x", " × ") for r in RESOLUTIONS}),
        Control("jpeg_quality", "JPEG quality", "range"),
        Control("usb_networking", "Settings page over the USB cable", "toggle",
                "Adds a network interface next to the camera."),
    ]),
]

# The preview's view switcher, first one shown by default.
VIEW_LABELS = {"output": "Output", "original": "Original", "mask": "Mask", "all": "Side by side"}
assert set(VIEW_LABELS) == set(PREVIEW_VIEWS)


@bp.app_context_processor
def password_help() -> dict:
    """How to get back in without the password, as the login page tells it: the exact command
    for this installation (a device with its default places, or a checkout on a PC)."""
    from appliance.cli import DEFAULT_WEB_STATE_DIR
    state_dir = Path(current_app.config["STATE_DIR"]).resolve()
    on_device = state_dir == DEFAULT_WEB_STATE_DIR
    if on_device:
        command = "sudo blurcam password reset"
    else:
        beside = Path(sys.executable).parent / "blurcam"  # the venv this page runs from
        program = str(beside) if beside.exists() else "blurcam"
        command = f"{shlex.quote(program)} password reset --web-state-dir {shlex.quote(str(state_dir))}"
    return {"password_reset": {"on_device": on_device, "command": command}}


def error_page(code: int, message: str):
    return render_template("error.html", code=code, message=message, version=__version__), code


@bp.get("/")
def settings_page():
    control = current_app.extensions["blurcam.control"]
    try:
        settings, service_error = control.get_settings(), None
    except ControlError as exc:
        settings, service_error = Settings().model_dump(), str(exc)
    return render_template("settings.html", effect_controls=EFFECT_CONTROLS,
                           sections=SECTIONS, settings=settings,
                           service_error=service_error, views=VIEW_LABELS, version=__version__,
                           password_from_env=current_app.extensions["blurcam.passwords"].from_env)
