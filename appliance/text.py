"""Text drawn into frames (the privacy card, preview notices) with a real font.

The font is DejaVu Sans, shipped in appliance/fonts/ (Debian package fonts-dejavu-core; its
licence is appliance/fonts/LICENSE-DejaVu.txt). Text is checked before it is accepted: a character
the font has no glyph for is refused with its name, never drawn as "?" or a box. Emoji (a colour
font this device does not carry) are dropped, and the caller tells the user so.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

FONT_PATH = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"

# Joiners and selectors that only shape an emoji; they go with it.
_EMOJI_GLUE = {0x200D, 0xFE0E, 0xFE0F, 0x20E3, *range(0x1F3FB, 0x1F400)}  # ... and skin tones
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),  # pictographs, emoticons, transport, flags (regional indicators) ...
    (0x2600, 0x27BF),    # miscellaneous symbols and dingbats
    (0x2B00, 0x2BFF),    # arrows and stars such as U+2B50
    (0xE0020, 0xE007F),  # tag characters of subdivision flags
)


class TextError(ValueError):
    """Text that cannot be drawn; the message names the characters and why."""


@dataclass(frozen=True)
class Checked:
    text: str            # what will be drawn (normalised, emoji removed)
    dropped: tuple[str, ...]  # emoji that were left out, in order, without repeats


@lru_cache(maxsize=1)
def _covered() -> frozenset[int]:
    from fontTools.ttLib import TTFont
    return frozenset(TTFont(str(FONT_PATH), lazy=True).getBestCmap())


def _is_emoji(cp: int) -> bool:
    return cp in _EMOJI_GLUE or any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES)


def _describe(ch: str) -> str:
    return f"{ch!r} (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')})"


def check(text: str) -> Checked:
    """What of `text` can be drawn. TextError names anything that cannot be drawn and is no emoji."""
    text = unicodedata.normalize("NFC", text)
    covered = _covered()
    kept: list[str] = []
    dropped: list[str] = []
    refused: list[str] = []
    rtl = False
    for ch in text:
        cp = ord(ch)
        if _is_emoji(cp) and (cp in _EMOJI_GLUE or cp not in covered):
            if cp not in _EMOJI_GLUE and ch not in dropped:
                dropped.append(ch)
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            refused.append(f"{_describe(ch)}: not a printable character")
        elif unicodedata.bidirectional(ch) in ("R", "AL", "AN"):
            rtl = True
        elif category == "Mn":
            refused.append(f"{_describe(ch)}: a combining mark with no precomposed letter")
        elif cp not in covered:
            refused.append(f"{_describe(ch)}: the card's font has no glyph for it")
        kept.append(ch)
    if rtl:
        refused.insert(0, "right-to-left script: the card draws left-to-right text only")
    if refused:
        unique = list(dict.fromkeys(refused))
        more = f" and {len(unique) - 3} more" if len(unique) > 3 else ""
        raise TextError("cannot be drawn: " + "; ".join(unique[:3]) + more)
    return Checked(" ".join("".join(kept).split()), tuple(dropped))


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont
    # The basic layout: the same output wherever the device runs (no optional shaping library).
    return ImageFont.truetype(str(FONT_PATH), size, layout_engine=ImageFont.Layout.BASIC)


def draw_centered(rgb: np.ndarray, text: str, centre_y: int, size: int,
                  colour: tuple[int, int, int], max_width: int | None = None) -> None:
    """Draw one line of already checked text into `rgb` (in place), centred horizontally at
    `centre_y`. The font shrinks until the line fits `max_width` (default 90 % of the image)."""
    from PIL import Image, ImageDraw
    if not text:
        return
    h, w = rgb.shape[:2]
    limit = max_width or int(w * 0.9)
    size = max(6, size)
    font = _font(size)
    while font.getlength(text) > limit and size > 6:
        size = max(6, int(size * limit / font.getlength(text)) if size > 7 else size - 1)
        font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    coverage = Image.new("L", (right - left, bottom - top))
    ImageDraw.Draw(coverage).text((-left, -top), text, font=font, fill=255)
    alpha = np.asarray(coverage, np.float32)[..., None] / 255.0
    x = (w - alpha.shape[1]) // 2
    y = centre_y - alpha.shape[0] // 2
    # Clip to the image (a very small card may be narrower than the shortest text).
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + alpha.shape[1]), min(h, y + alpha.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
    region = rgb[y0:y1, x0:x1].astype(np.float32)
    rgb[y0:y1, x0:x1] = (region * (1 - a) + np.array(colour, np.float32) * a).astype(np.uint8)
