"""Replacement backgrounds: the built-in pictures and the one the user uploaded.

The `background` setting names one of them: a built-in by its name ("dusk"), an upload by the file
name the daemon gave it ("background-<12 hex digits>.jpg"), or "" for the default built-in (so
"Replace" always has a picture to show). Nothing else is a valid name: a setting can never point
the daemon at another file.
"""

from __future__ import annotations

import re
from pathlib import Path

# Drawn by tools/make_backgrounds.py; the first is the default.
BUILTIN: dict[str, str] = {
    "studio": "Studio grey",
    "dusk": "Dusk",
    "ocean": "Ocean",
    "evening-window": "Evening window",
    "bookshelf": "Bookshelf (out of focus)",
    "garden": "Garden (out of focus)",
}
DEFAULT = next(iter(BUILTIN))
BUILTIN_DIR = Path(__file__).resolve().parent / "background_images"
UPLOAD_NAME = re.compile(r"background-[0-9a-f]{12}\.jpg")


def check_name(name: str) -> None:
    """ValueError unless `name` is "", a built-in or an upload's file name."""
    if name and name not in BUILTIN and not UPLOAD_NAME.fullmatch(name):
        raise ValueError(f"one of {', '.join(BUILTIN)}, an uploaded picture's name "
                         "(background-<12 hex digits>.jpg) or empty for the default")


def is_upload(name: str) -> bool:
    return bool(UPLOAD_NAME.fullmatch(name))


def path_of(name: str, upload_dir: Path) -> Path:
    """The file behind a (checked) background name; "" is the default built-in."""
    check_name(name)
    if is_upload(name):
        return upload_dir / name
    return BUILTIN_DIR / f"{name or DEFAULT}.jpg"


def label_of(name: str) -> str:
    return "Your picture" if is_upload(name) else BUILTIN[name or DEFAULT]
