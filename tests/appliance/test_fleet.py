"""The fleet file validator, per-card overrides and per-device identity (fast; part of `make test`)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from appliance import fleet
from appliance.fleet import FleetError

EXAMPLE = Path(__file__).resolve().parents[2] / "image-build" / "fleet.example.toml"
BUILD = EXAMPLE.parent / "build.sh"
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILbAiJXe4wElcE6DspCfjB8gO0hp9hpn0dlTdBJEEZqB "
       "operator@example")


def errors_of(data: dict) -> dict[str, str]:
    with pytest.raises(FleetError) as exc:
        fleet.parse(data)
    return exc.value.errors


def test_the_example_fleet_file_is_valid_and_says_what_it_will_do(capsys):
    assert fleet.main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "blurcam-b2c3d4" in out and "'ExampleNet' (DE)" in out


def test_an_empty_fleet_file_means_defaults_everywhere():
    f = fleet.parse({})
    assert (f.usb.vendor_id, f.usb.product_id) == (0x1D6B, 0x0104)
    assert f.device.hostname_pattern == "blurcam-{serial6}"
    assert f.wifi is None and f.ssh.authorized_keys == []


def test_bad_settings_are_reported_with_the_settings_validators_reasons():
    errs = errors_of({"settings": {"blur_strength": 500, "colour": "red"}})
    assert "1..100" in errs["settings.blur_strength"] and "500" in errs["settings.blur_strength"]
    assert errs["settings.colour"] == "unknown setting"


def test_usb_ids_accept_hex_numbers_and_hex_strings_but_not_out_of_range_or_bare_hex():
    assert fleet.parse({"usb": {"vendor_id": "0x1209", "product_id": 0xABCD}}).usb.vendor_id == 0x1209
    errs = errors_of({"usb": {"vendor_id": "1d6b", "product_id": 0x10000}})
    assert "0x1d6b" in errs["usb.vendor_id"]
    assert "0xffff" in errs["usb.product_id"]


def test_usb_strings_must_be_one_printable_line_short_enough_for_a_descriptor():
    errs = errors_of({"usb": {"manufacturer": "", "product": "a\nb", "serial_number": "has space"}})
    assert set(errs) == {"usb.manufacturer", "usb.product", "usb.serial_number"}
    assert "126" in errors_of({"usb": {"product": "x" * 127}})["usb.product"]


def test_a_plain_password_is_rejected_and_a_generated_hash_is_accepted():
    err = errors_of({"web": {"admin_password_hash": "hunter2"}})["web.admin_password_hash"]
    assert "hash-password" in err
    good = fleet.hash_password("correct horse")
    assert fleet.parse({"web": {"admin_password_hash": good}}).web.admin_password_hash == good
    truncated = good[:-1]
    assert "web.admin_password_hash" in errors_of({"web": {"admin_password_hash": truncated}})


@pytest.mark.parametrize("pattern, reason", [
    ("blurcam", "serial placeholder"),
    ("cam-{host}", "unknown placeholder {host}"),
    ("cam-{serial6:>8}", "unknown placeholder"),
    ("cam_{serial4}", "not a valid hostname"),
    ("-{serial4}", "not a valid hostname"),
    ("x" * 60 + "{serial6}", "not a valid hostname"),
    ("cam-{serial4", "not a valid pattern"),
])
def test_hostname_patterns_that_cannot_name_each_device_properly_are_rejected(pattern, reason):
    assert reason in errors_of({"device": {"hostname_pattern": pattern}})["device.hostname_pattern"]


def test_hostnames_come_from_the_end_of_the_board_serial_in_lower_case():
    assert fleet.render_hostname("BlurCam-{serial6}", "10000000ABCDEF12") == "blurcam-cdef12"
    assert fleet.render_hostname("cam-{serial}", "abc") == "cam-0000000000000abc"
    with pytest.raises(ValueError, match="not hexadecimal"):
        fleet.normalize_serial("not-a-serial")


def test_wifi_needs_a_country_and_a_valid_passphrase():
    errs = errors_of({"wifi": {"country": "de", "ssid": "x" * 33, "psk": "short"}})
    assert set(errs) == {"wifi.country", "wifi.ssid", "wifi.psk"}
    assert errors_of({"wifi": {"ssid": "Net"}})["wifi.country"] == "is required"
    assert fleet.parse({"wifi": {"country": "US", "ssid": "Net", "psk": "a" * 64}}).wifi.psk == "a" * 64


def test_each_bad_ssh_key_line_is_named_by_its_position():
    truncated = KEY.split()[0] + " " + KEY.split()[1][:-8]
    errs = errors_of({"ssh": {"authorized_keys": [KEY, "hello world", truncated,
                                                   'command="x" ' + KEY]}})
    assert set(errs) == {"ssh.authorized_keys[1]", "ssh.authorized_keys[2]", "ssh.authorized_keys[3]"}
    assert "damaged" in errs["ssh.authorized_keys[2]"] or "whole" in errs["ssh.authorized_keys[2]"]


def test_unknown_tables_and_keys_list_what_is_allowed():
    errs = errors_of({"usb": {"vendor": 1}, "extra": {}})
    assert "allowed: vendor_id" in errs["usb.vendor"]
    assert "allowed: settings, usb" in errs["extra"]


def test_an_override_replaces_single_keys_and_keeps_the_rest_of_each_table():
    base = tomllib.loads(EXAMPLE.read_text())
    cfg, hostname = fleet.effective(base, {"usb": {"product": "Desk 4"}, "settings": {"effect": "none"}},
                                    "10000000a1b2c3d4")
    assert cfg.usb.product == "Desk 4" and cfg.usb.manufacturer == "Example Corp"
    assert cfg.settings["effect"] == "none" and cfg.settings["blur_strength"] == 60
    assert cfg.usb.serial_number == "10000000a1b2c3d4"
    assert hostname == "blurcam-b2c3d4"


def test_an_override_may_set_a_single_key_of_a_table_with_required_keys():
    base = {"wifi": {"country": "DE", "ssid": "Net", "psk": "old-passphrase"}}
    cfg, _ = fleet.effective(base, {"wifi": {"psk": "new-passphrase"}}, "1")
    assert cfg.wifi.ssid == "Net" and cfg.wifi.psk == "new-passphrase"
    with pytest.raises(FleetError) as exc:
        fleet.effective({}, {"wifi": {"psk": "new-passphrase"}}, "1")
    assert exc.value.errors == {"wifi.country": "is required", "wifi.ssid": "is required"}


def test_a_bad_override_is_rejected_naming_its_own_field():
    with pytest.raises(FleetError) as exc:
        fleet.effective({}, {"usb": {"vendor_id": -1}}, "1234")
    assert list(exc.value.errors) == ["usb.vendor_id"]


def test_the_written_effective_file_reads_back_the_same_and_leaves_out_the_wifi_passphrase():
    base = tomllib.loads(EXAMPLE.read_text())
    cfg, _ = fleet.effective(base, None, "10000000a1b2c3d4")
    text = fleet.to_toml(cfg)
    assert "correct horse" not in text
    again = fleet.parse(tomllib.loads(text))
    assert again.usb == cfg.usb and again.settings == cfg.settings and again.ssh == cfg.ssh
    assert fleet.parse(tomllib.loads(fleet.to_toml(cfg, secrets=True))).wifi.psk == "correct horse battery"


def test_check_prints_every_error_naming_the_file_and_field(tmp_path, capsys):
    bad = tmp_path / "fleet.toml"
    bad.write_text('[usb]\nvendor_id = "oops"\n[device]\nhostname_pattern = "x"\n')
    assert fleet.main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: invalid fleet file" in err
    assert "usb.vendor_id:" in err and "device.hostname_pattern:" in err


def test_check_reports_toml_syntax_errors_with_their_line(tmp_path, capsys):
    bad = tmp_path / "fleet.toml"
    bad.write_text("[usb]\nvendor_id = = 1\n")
    assert fleet.main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not valid TOML" in err and "line 2" in err


def test_check_of_a_missing_file_says_so(tmp_path, capsys):
    assert fleet.main(["check", str(tmp_path / "nope.toml")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_an_invalid_fleet_file_stops_the_build_before_anything_is_built(tmp_path):
    bad = tmp_path / "fleet.toml"
    bad.write_text('[device]\nhostname_pattern = "cam_{serial4}"\n[wifi]\ncountry = "DE"\n')
    r = subprocess.run([str(BUILD), "--variant", "offline", "--config", str(bad), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "device.hostname_pattern" in r.stderr and "wifi.ssid: is required" in r.stderr
    assert "nothing was built" in r.stderr and not (tmp_path / "out").exists()


def test_the_update_signing_key_and_certificate_go_together():
    assert fleet.parse({"update": {"signing_key": "k.pem", "signing_cert": "c.pem"}}).update.signing_cert == "c.pem"
    assert fleet.parse({}).update.signing_key is None  # none: the build uses a development key
    assert "go together" in errors_of({"update": {"signing_key": "k.pem"}})["update"]
    assert "go together" in errors_of({"update": {"signing_cert": "c.pem"}})["update"]
    assert "unknown key" in errors_of({"update": {"key": "k.pem"}})["update.key"]


def test_the_rollout_server_is_an_http_address_and_the_tenant_a_name():
    update = fleet.parse({"update": {"hawkbit_url": "http://127.0.0.1:60053"}}).update
    assert (update.hawkbit_url, update.hawkbit_tenant, update.hawkbit_token) == ("http://127.0.0.1:60053", "DEFAULT", None)
    assert "scheme, host, optional port" in errors_of({"update": {"hawkbit_url": "ftp://x"}})["update.hawkbit_url"]
    assert "no path" in errors_of({"update": {"hawkbit_url": "https://x.example/api"}})["update.hawkbit_url"]
    assert "letters, digits" in errors_of({"update": {"hawkbit_tenant": "a b"}})["update.hawkbit_tenant"]


# ---- one reader for every part of the device that reads the fleet file ----

def test_each_table_is_read_alone_so_a_mistake_elsewhere_does_not_matter(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text('[usb]\nproduct = "Cam"\n[settings]\nblur_strength = 20\n'
                    '[wifi]\ncountry = "nowhere"\n[web]\nmetrics_token = "short"\n')
    assert fleet.read_table(path, "usb").product == "Cam"
    assert fleet.read_table(path, "settings") == {"blur_strength": 20}
    with pytest.raises(FleetError) as exc:
        fleet.read_table(path, "web")
    assert list(exc.value.errors) == [f"{path}: [web] metrics_token"]


def test_without_a_file_or_a_table_every_table_has_its_defaults(tmp_path):
    assert fleet.read_table(None, "usb") == fleet.Usb()
    assert fleet.read_table(tmp_path / "absent.toml", "web") == fleet.Web()
    assert fleet.read_table(tmp_path / "absent.toml", "settings") == {}
    (tmp_path / "empty.toml").write_text("")
    assert fleet.read_table(tmp_path / "empty.toml", "device") == fleet.Device()


@pytest.mark.parametrize("text, name, key, words", [
    ("[settings]\nblur_strength = 300\n", "settings", "[settings] blur_strength", "1..100"),
    ("[settings]\ncolour = 1\n", "settings", "[settings] colour", "unknown setting"),
    ("settings = 5\n", "settings", "[settings]", "must be a table"),
    ("[usb]\nvendor_id = \"0x12345\"\n", "usb", "[usb] vendor_id", "16-bit id"),
    ("[usb]\nspeed = 3\n", "usb", "[usb] speed", "allowed: vendor_id"),
    ("[web]\nadmin_password_hash = \"scrypt:nothing\"\n", "web", "[web] admin_password_hash",
     "not a werkzeug password hash"),
])
def test_a_bad_table_names_the_file_the_table_and_each_key(tmp_path, text, name, key, words):
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    with pytest.raises(FleetError) as exc:
        fleet.read_table(path, name)
    assert words in exc.value.errors[f"{path}: {key}"]


def test_a_damaged_file_is_the_same_error_for_every_reader(tmp_path):
    from appliance.settings import SettingsStore
    from appliance.uvc.configfs import GadgetError, read_usb_identity
    from web.auth import PasswordStore
    path = tmp_path / "fleet.toml"
    path.write_text("[usb\nproduct = 'x'\n")
    for read in (lambda: SettingsStore(tmp_path / "state", path), lambda: read_usb_identity(path),
                 lambda: PasswordStore(tmp_path / "web", path)):
        with pytest.raises((FleetError, GadgetError), match="not valid TOML"):
            read()


def test_the_settings_page_takes_only_a_real_password_hash_from_the_fleet_file(tmp_path):
    from werkzeug.security import generate_password_hash

    from web.auth import PasswordStore
    path = tmp_path / "fleet.toml"
    path.write_text(f'[web]\nadmin_password_hash = "{generate_password_hash("fleet-secret-1")}"\n')
    assert PasswordStore(tmp_path / "web", path).check("fleet-secret-1")
    path.write_text('[web]\nadmin_password_hash = "scrypt:hunter2"\n')  # the prefix alone passed before
    with pytest.raises(FleetError, match="not a werkzeug password hash"):
        PasswordStore(tmp_path / "web2", path)
