"""The settings page itself. Controls are described once here; ranges come from the Settings schema
and the image controls (the "Picture" section) from their table in appliance/controls.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flask import Blueprint, current_app, render_template

from appliance import __version__, controls
from appliance.control import PREVIEW_VIEWS, ControlError
from appliance.settings import RESOLUTIONS, Settings

bp = Blueprint("views", __name__)


@dataclass(frozen=True)
class Control:
    """One setting on the page."""

    name: str
    label: str
    kind: Literal["range", "choice", "toggle", "text", "multi"]
    hint: str = ""
    options: dict[str, str] = field(default_factory=dict)  # value -> label, for choice/multi

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
        return {int: "int", float: "float", bool: "bool"}.get(ann, "list" if self.kind == "multi" else "str")

    @property
    def max_length(self) -> int | None:
        return self._bound("max_length")

    def _bound(self, attr: str):
        for meta in Settings.model_fields[self.name].metadata:
            if getattr(meta, attr, None) is not None:
                return getattr(meta, attr)
        return None


SECTIONS: list[tuple[str, list[Control]]] = [
    ("Effect", [
        Control("effect", "Effect", "choice", options={
            "blur": "Blur", "replace": "Replace", "privacy": "Privacy card", "none": "Off"}),
        Control("blur_strength", "Blur strength", "range", "How strongly the background is blurred."),
        Control("privacy_text", "Privacy card text", "text", "Shown instead of the picture."),
    ]),
    ("Framing", [
        Control("framing", "Auto-framing", "choice",
                "Keeps you framed, head and shoulders, as you move; holds still when you do.",
                options={"off": "Off", "auto": "Auto"}),
        Control("framing_zoom", "Maximum zoom", "range"),
        Control("framing_speed", "Speed", "choice", options={
            "slow": "Slow", "normal": "Normal", "fast": "Fast"}),
    ]),
    ("Person outline", [
        Control("mask_threshold", "Person threshold", "range",
                "Higher keeps less of the picture as “person”."),
        Control("edge_softness", "Edge softness", "range", "0 is a hard cut-out edge."),
        Control("temporal_smoothing", "Temporal smoothing", "range",
                "Steadier outline; too high lags behind quick moves."),
    ]),
    ("Picture", [
        *(Control(c.name, c.label, "range" if c.choices is None else "choice", c.hint,
                  options={str(v): label for v, label in (c.choices or {}).items()})
          for c in controls.CONTROLS),
        Control("mirror", "Mirror the picture", "toggle"),
    ]),
    ("Model", [
        Control("model", "Segmentation model", "choice", options={
            "auto": "Automatic (landscape for 16:9 formats)", "general": "General",
            "landscape": "Landscape (faster)"}),
        Control("precision", "Precision", "choice", options={
            "int8": "int8 (faster)", "float": "float (finer edges)"}),
        Control("inference_threads", "Inference threads", "range"),
    ]),
    ("USB output", [
        Control("resolutions", "Offered resolutions", "multi",
                "Sizes the computer may pick. Changes apply when it next connects.",
                options={r: r.replace("x", " × ") for r in RESOLUTIONS}),
        Control("jpeg_quality", "JPEG quality", "range"),
        Control("usb_networking", "Settings page over the USB cable", "toggle",
                "Adds a network interface next to the camera."),
    ]),
]


def error_page(code: int, message: str):
    return render_template("error.html", code=code, message=message, version=__version__), code


@bp.get("/")
def settings_page():
    control = current_app.extensions["blurcam.control"]
    try:
        settings, service_error = control.get_settings(), None
    except ControlError as exc:
        settings, service_error = Settings().model_dump(), str(exc)
    return render_template("settings.html", sections=SECTIONS, settings=settings,
                           service_error=service_error, views=PREVIEW_VIEWS, version=__version__,
                           password_from_env=current_app.extensions["blurcam.passwords"].from_env)
