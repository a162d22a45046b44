"""web/API.md documents every setting the API accepts (operators script fleets from it)."""

import re
from pathlib import Path

from appliance.settings import Settings

API_MD = Path(__file__).resolve().parents[2] / "web" / "API.md"


def documented_settings() -> set[str]:
    text = API_MD.read_text()
    table = text[text.index("### Settings"):text.index("Types are strict")]
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names.update(re.findall(r"`([a-z_]+)`", first_cell))
    return names


def test_the_settings_table_names_every_setting_and_nothing_else():
    fields = set(Settings.model_fields)
    documented = documented_settings()
    assert fields - documented == set(), "settings missing from web/API.md"
    assert documented - fields == set(), "web/API.md documents settings that do not exist"
