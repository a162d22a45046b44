"""The pages web/views.py draws: here, the login page's way back in without the password."""

from __future__ import annotations

import re
import shlex

from appliance import cli


def test_on_a_device_the_login_page_gives_the_devices_own_command_and_it_works(make_app, tmp_path, monkeypatch, capsys):
    # A device keeps the page's state in the default place; here that place is a temporary one.
    monkeypatch.setattr(cli, "DEFAULT_WEB_STATE_DIR", (tmp_path / "web").resolve())
    client = make_app(ADMIN_PASSWORD=None).test_client()  # a generated password, as on a device
    page = client.get("/login").get_data(as_text=True)
    hint = re.search(r'<div class="hint" id="password-hint">(.*?)</div>', page, re.S).group(1)
    command = re.search(r"<code>([^<]*password reset[^<]*)</code>", hint).group(1)
    assert command == "sudo blurcam password reset"
    assert "sudo blurcam reset" in hint  # the factory reset, too
    assert "journalctl" not in hint and "terminal" not in hint

    program, *args = shlex.split(command)[2:]  # what `blurcam` does, without sudo
    assert program == "password" and cli.main([program, *args]) == 0
    new_password = re.search(r"New password for the settings page: (\S+)", capsys.readouterr().out).group(1)
    response = client.post("/api/login", json={"password": new_password})
    assert response.status_code == 200, response.json
