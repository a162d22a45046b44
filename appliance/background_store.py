"""The daemon's replacement backgrounds: the uploaded picture on disk, the picker's list and
thumbnails, and the picture the pipeline composites with. (Names and built-ins: backgrounds.py.)"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from appliance import backgrounds
from appliance.frame import fit_cover
from appliance.settings import Settings, SettingsError, SettingsStore
from appliance.sources.base import SourceError
from appliance.sources.file import decode_image, read_image
from appliance.storage import StorageError, remove_stale_temp_files, write_atomically

log = logging.getLogger(__name__)

BACKGROUND_MAX = (1920, 1080)
BACKGROUND_FILES = "background-*.jpg"  # the names set_background gives uploaded pictures
THUMBNAIL_SIZE = (224, 126)


def remove_backgrounds(state_dir: Path, keep: str = "") -> list[str]:
    """Delete the uploaded background pictures (factory reset), except `keep` (a fleet default
    may name one). Returns the names removed."""
    removed = []
    for picture in (Path(state_dir) / "backgrounds").glob(BACKGROUND_FILES):
        if picture.name != keep and picture.is_file() and not picture.is_symlink():
            picture.unlink()
            removed.append(picture.name)
    return removed


class BackgroundStore:
    """Uploaded backgrounds under STATE_DIR/backgrounds; the `background` setting picks one."""

    def __init__(self, state_dir: Path, settings: SettingsStore):
        self.state_dir = Path(state_dir)
        self.upload_dir = self.state_dir / "backgrounds"
        self.settings = settings
        self._thumbnails: dict[tuple[str, int], bytes] = {}
        remove_stale_temp_files(self.upload_dir, (BACKGROUND_FILES,))

    def picture(self, s: Settings) -> np.ndarray | None:
        """The RGB picture `s` selects, or None (then the pipeline blurs instead)."""
        path = backgrounds.path_of(s.background, self.upload_dir)
        try:
            return read_image(path)
        except SourceError as exc:
            log.error("background %s unusable (%s); blurring instead", path, exc)
            return None

    def check_choice(self, name: object) -> None:
        """SettingsError unless an upload's name refers to a picture the daemon stored."""
        if isinstance(name, str) and backgrounds.is_upload(name) and not (self.upload_dir / name).is_file():
            raise SettingsError({"background": f"{name!r} is not a stored background; upload the "
                                               "picture with POST /api/background"})

    def upload(self, data: bytes) -> Settings:
        """Store an uploaded picture (scaled to at most 1080p) and select it."""
        try:
            rgb = decode_image(data, "background upload", fit=BACKGROUND_MAX)
        except SourceError as exc:
            raise SettingsError({"background": str(exc)}) from None
        h, w = rgb.shape[:2]
        scale = min(1.0, BACKGROUND_MAX[0] / w, BACKGROUND_MAX[1] / h)
        if scale < 1.0:
            rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        jpeg = simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=90, colorspace="RGB")
        name = f"background-{hashlib.sha256(jpeg).hexdigest()[:12]}.jpg"
        old = self.settings.current.background
        write_atomically(self.upload_dir / name, jpeg, what="background picture")
        try:
            new = self.settings.update({"background": name})
        except StorageError:
            if name != old:  # not saved as the choice: do not leave the picture behind
                (self.upload_dir / name).unlink(missing_ok=True)
            raise
        remove_backgrounds(self.state_dir, keep=name)  # one upload is kept: the newest
        return new

    def remove_uploads(self, keep: str = "") -> list[str]:
        return remove_backgrounds(self.state_dir, keep)

    def _uploads(self) -> list[str]:
        if not self.upload_dir.is_dir():
            return []
        return sorted(p.name for p in self.upload_dir.iterdir() if backgrounds.is_upload(p.name))

    def choices(self) -> dict:
        """The pictures "Replace" can use, and the one in effect ("" is the default built-in)."""
        choices = [{"name": name, "label": label, "kind": "builtin"} for name, label in backgrounds.BUILTIN.items()]
        choices += [{"name": name, "label": backgrounds.label_of(name), "kind": "uploaded"}
                    for name in self._uploads()]
        return {"current": self.settings.current.background or backgrounds.DEFAULT, "choices": choices}

    def thumbnail(self, name: str) -> bytes:
        """A small JPEG of a background (for the page's picker)."""
        try:
            path = backgrounds.path_of(name, self.upload_dir)
        except ValueError as exc:
            raise SettingsError({"name": str(exc)}) from None
        key = (str(path), path.stat().st_mtime_ns if path.exists() else 0)
        if key not in self._thumbnails:
            try:
                rgb = read_image(path)
            except SourceError as exc:
                raise SettingsError({"name": f"{name}: {exc}"}) from None
            small = fit_cover(rgb, *THUMBNAIL_SIZE)
            self._thumbnails = {key: simplejpeg.encode_jpeg(np.ascontiguousarray(small), quality=80,
                                                            colorspace="RGB"), **self._thumbnails}
            while len(self._thumbnails) > 16:
                self._thumbnails.pop(next(reversed(self._thumbnails)))
        return self._thumbnails[key]
