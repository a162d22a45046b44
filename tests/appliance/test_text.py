"""Text on the privacy card: drawn with a real font, emoji left out by name, the rest refused."""

from __future__ import annotations

import re

import numpy as np
import pytest

from appliance import text
from appliance.compose import privacy_card
from appliance.control import ControlClient
from appliance.frame import split_i420
from appliance.settings import SettingsError


def luma(card: np.ndarray) -> np.ndarray:
    return split_i420(card)[0].astype(np.int16)


def ink(image: np.ndarray) -> np.ndarray:
    """Where text was drawn on a card (the card's flat backdrop is 40-ish in luma)."""
    return image > 120


def test_accented_letters_are_drawn_as_letters_not_question_marks():
    cafe = luma(privacy_card(640, 360, "Café in Zürich"))
    for fallback in ("Caf? in Z?rich", "Caf?? in Z??rich", "Cafe in Zurich"):
        other = luma(privacy_card(640, 360, fallback))
        assert np.abs(cafe - other).max() > 100, f"'Café in Zürich' drawn like {fallback!r}"
    # The accents differ from plain letters only above the letters' x-height, not in their bodies.
    plain = luma(privacy_card(640, 360, "Cafe in Zurich"))
    rows = np.nonzero((ink(cafe) != ink(plain)).any(axis=1))[0]
    text_rows = np.nonzero(ink(plain)[200:].any(axis=1))[0] + 200
    assert rows.min() < text_rows.min() + (text_rows.max() - text_rows.min()) // 3, rows


def test_emoji_are_left_out_and_named():
    checked = text.check("Café in Zürich 👋")
    assert checked == text.Checked("Café in Zürich", ("👋",))
    # A thumbs-up with a skin tone is one emoji to the user: it is named once, the tone not at all.
    assert text.check("ok 👍🏽").dropped == ("👍",)
    # Symbols the font does draw stay.
    assert text.check("Back soon ☺").text == "Back soon ☺"


def test_a_decomposed_accent_is_drawn_like_the_composed_letter():
    assert text.check("Cafe\u0301").text == "Café"


@pytest.mark.parametrize("value, named", [
    ("東京", "U+6771"),
    ("a\x07b", "U+0007"),
    ("q\u0301", "U+0301"),
    ("שלום", "right-to-left"),
])
def test_text_that_cannot_be_drawn_is_refused_naming_why(value, named):
    with pytest.raises(text.TextError, match=re.escape(named)):
        text.check(value)


def test_a_long_text_shrinks_to_fit_the_card():
    card = ink(luma(privacy_card(640, 360, "A" * 30 + " " + "W" * 29)))
    columns = np.nonzero(card[200:].any(axis=0))[0]
    assert columns.min() >= 640 * 0.04 and columns.max() <= 640 * 0.96, (columns.min(), columns.max())


def test_the_daemon_saves_what_it_draws_and_refuses_what_it_cannot(demo_daemon, demo_controller):
    client = ControlClient(demo_daemon.path)
    assert client.update_settings({"privacy_text": "Café in Zürich 👋"})["privacy_text"] == "Café in Zürich"
    with pytest.raises(SettingsError) as caught:
        client.update_settings({"privacy_text": "Tokyo 東京"})
    assert "U+6771" in caught.value.errors["privacy_text"]
    assert demo_controller.settings.current.privacy_text == "Café in Zürich"
