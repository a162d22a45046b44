"""The fleet file: one TOML file configures every device flashed from one image.

Tables (all optional; an empty file is valid and means "defaults everywhere"):
  [settings]  defaults for the user-changeable settings (appliance.settings fields)
  [usb]       the USB identity the host sees: vendor_id, product_id, manufacturer, product,
              serial_number (normally left out: each device then uses its own board serial)
  [web]       admin_password_hash (make one with `blurcam fleet hash-password`), metrics_token
              (a bearer token for /metrics only)
  [device]    hostname_pattern, e.g. "blurcam-{serial6}"
  [wifi]      country, ssid, psk, hidden
  [ssh]       authorized_keys (SSH is off unless keys are given; password login is always off)
  [update]    signing_key, signing_cert, keyring: the update bundles' signing key and certificate
              (PEM files on the build machine, relative to the fleet file) and the certificates
              devices trust (default: signing_cert); none: a development key, with a warning.
              hawkbit_url, hawkbit_tenant, hawkbit_token: the rollout server devices poll
              (hawkBit's DDI API: Eclipse hawkBit or goosebit); none: no polling

The image carries the operator's file; a card may carry an override file with the same schema on
its boot partition (/boot/firmware/blurcam.toml), merged key by key over the image's. `parse`, `load` and `effective` raise
FleetError, whose `errors` map a dotted field name ("usb.vendor_id", "ssh.authorized_keys[1]") to
a sentence saying what is wrong.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import json
import re
import string
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from appliance.settings import SettingsError
from appliance.settings import validate as validate_settings

# Board serials are 16 hex digits on every Raspberry Pi; the pattern can use the last n of them.
SERIAL_PLACEHOLDERS = {"serial": 16, "serial4": 4, "serial6": 6, "serial8": 8}
EXAMPLE_SERIAL = "10000000a1b2c3d4"
HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
PASSWORD_HASH = re.compile(
    r"^(scrypt:\d+:\d+:\d+\$[A-Za-z0-9]+\$[0-9a-f]{128}"
    r"|pbkdf2:sha(256|512):\d+\$[A-Za-z0-9]+\$[0-9a-f]{64,128})$")
METRICS_TOKEN = re.compile(r"[A-Za-z0-9._-]{32,256}")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                 "sk-ecdsa-sha2-nistp256@openssh.com")


class FleetError(ValueError):
    """A rejected fleet file. `errors` maps each bad field (dotted) to a sentence saying why."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _usb_id(value: Any) -> int:
    """USB ids as written by people: 0x1d6b (TOML hex int), 7531, or the string "0x1d6b"."""
    if isinstance(value, str):
        if not re.fullmatch(r"0x[0-9a-fA-F]{1,4}", value):
            raise ValueError(f"expected a 16-bit id like 0x1d6b; got {value!r}")
        value = int(value, 16)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a 16-bit id like 0x1d6b; got {value!r}")
    if not 0 < value <= 0xFFFF:
        raise ValueError(f"must be between 0x0001 and 0xffff; got {value:#x}")
    return value


def _usb_string(value: str) -> str:
    # configfs takes one line; a string descriptor holds at most 126 UTF-16 code units.
    if not value.strip():
        raise ValueError("must not be empty")
    if any(not ch.isprintable() for ch in value):
        raise ValueError("must be printable text on one line")
    if len(value.encode("utf-16-le")) // 2 > 126:
        raise ValueError("is longer than the 126 characters a USB string descriptor can hold")
    return value


class Usb(_Table):
    vendor_id: int = 0x1D6B  # Linux Foundation; set your own vendor id for a product you sell
    product_id: int = 0x0104  # "Multifunction Composite Gadget"
    manufacturer: str = "BlurCam"
    product: str = "BlurCam"
    serial_number: str | None = None

    _ids = field_validator("vendor_id", "product_id", mode="before")(_usb_id)
    _strings = field_validator("manufacturer", "product")(_usb_string)

    @field_validator("serial_number")
    @classmethod
    def _serial(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-' "
                             "(leave it out to use each board's own serial)")
        return value


class Web(_Table):
    admin_password_hash: str | None = None
    # Lets a monitoring server read /metrics (and nothing else) without the admin password.
    metrics_token: str | None = None

    @field_validator("metrics_token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not METRICS_TOKEN.fullmatch(value):
            raise ValueError("must be 32 to 256 letters, digits, '-', '_' or '.' (make one with "
                             "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return value

    @field_validator("admin_password_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None and not PASSWORD_HASH.match(value):
            raise ValueError("is not a werkzeug password hash (scrypt:N:r:p$salt$hex); never put "
                             "the password itself here: make the hash with "
                             "`blurcam fleet hash-password`")
        return value


def render_hostname(pattern: str, serial: str) -> str:
    """The hostname a device with board serial `serial` gets from `pattern`."""
    serial = normalize_serial(serial)
    values = {name: serial[-n:] for name, n in SERIAL_PLACEHOLDERS.items()}
    return pattern.format(**values).lower()


class Device(_Table):
    hostname_pattern: str = "blurcam-{serial6}"

    @field_validator("hostname_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value)
                      if name is not None]
        except ValueError as exc:
            raise ValueError(f"is not a valid pattern ({exc}); use e.g. 'blurcam-{{serial6}}'") from None
        allowed = ", ".join(f"{{{p}}}" for p in SERIAL_PLACEHOLDERS)
        for name, spec, conv in fields:
            if name not in SERIAL_PLACEHOLDERS or spec or conv:
                raise ValueError(f"has unknown placeholder {{{name}}}; allowed: {allowed}")
        if not fields:
            raise ValueError(f"must contain a serial placeholder ({allowed}) so that every "
                             "device gets its own name")
        example = render_hostname(value, EXAMPLE_SERIAL)
        if not HOSTNAME_LABEL.match(example):
            raise ValueError(f"gives hostnames like {example!r}, which is not a valid hostname "
                             "(1-63 letters, digits and '-', not starting or ending with '-')")
        return value


class Wifi(_Table):
    country: str
    ssid: str
    psk: str | None = None  # None: an open network
    hidden: bool = False

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{2}", value) or value == "00":
            raise ValueError(f"must be a two-letter ISO 3166 country code like 'DE' or 'US'; got {value!r}")
        return value

    @field_validator("ssid")
    @classmethod
    def _ssid(cls, value: str) -> str:
        if not 1 <= len(value.encode()) <= 32:
            raise ValueError("must be 1 to 32 bytes long")
        return value

    @field_validator("psk")
    @classmethod
    def _psk(cls, value: str | None) -> str | None:
        if value is None or re.fullmatch(r"[0-9a-fA-F]{64}", value):
            return value
        if not 8 <= len(value) <= 63 or any(not " " <= ch <= "~" for ch in value):
            raise ValueError("a WPA passphrase is 8 to 63 printable ASCII characters "
                             "(or 64 hex digits)")
        return value


def check_ssh_key(line: str) -> str:
    """Validate one authorized_keys line ('type base64 [comment]'); return it stripped."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError("is not a public key line 'ssh-ed25519 AAAA... comment' "
                         f"(key types: {', '.join(SSH_KEY_TYPES[:3])}, ...); options are not allowed")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise ValueError("has a key whose base64 text is damaged") from None
    # The key blob is a sequence of length-prefixed fields, the first being the key's own type.
    fields, offset = [], 0
    while offset + 4 <= len(blob):
        n = int.from_bytes(blob[offset:offset + 4], "big")
        fields.append(blob[offset + 4:offset + 4 + n])
        offset += 4 + n
    if offset != len(blob) or not fields or fields[0].decode(errors="replace") != parts[0]:
        raise ValueError(f"has key data that is not a whole {parts[0]} key (truncated or mislabelled?)")
    return " ".join(parts)


class Ssh(_Table):
    authorized_keys: list[str] = Field(default_factory=list)

    @field_validator("authorized_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        # Each bad line is reported with its index by the caller-visible error path.
        return [check_ssh_key(k) for k in keys]


class Update(_Table):
    # Paths on the build machine (relative to the fleet file); checked by the image build, which
    # is where they are read. The key itself never goes into the image.
    signing_key: str | None = None
    signing_cert: str | None = None
    keyring: str | None = None
    hawkbit_url: str | None = None  # http(s)://host[:port] of the rollout server
    hawkbit_tenant: str = "DEFAULT"
    hawkbit_token: str | None = None  # the devices' target token, if the server asks for one

    @field_validator("hawkbit_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+/?", value):
            raise ValueError("must be the server's address like https://updates.example.com or "
                             "http://10.0.0.5:60053 (scheme, host, optional port; no path)")
        return value

    @field_validator("hawkbit_tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("signing_key", "signing_cert", "keyring")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\n" in value):
            raise ValueError("must be the path of a PEM file")
        return value

    @model_validator(mode="after")
    def _pair(self) -> Update:
        if (self.signing_key is None) != (self.signing_cert is None):
            raise ValueError("signing_key and signing_cert go together: give both, or neither "
                             "for a development key")
        return self


class Fleet(_Table):
    settings: dict[str, Any] = Field(default_factory=dict)
    usb: Usb = Field(default_factory=Usb)
    web: Web = Field(default_factory=Web)
    device: Device = Field(default_factory=Device)
    wifi: Wifi | None = None
    ssh: Ssh = Field(default_factory=Ssh)
    update: Update = Field(default_factory=Update)


def _field_name(loc: tuple) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _allowed_keys(loc: tuple) -> str:
    model: Any = Fleet
    for part in loc[:-1]:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(info, "annotation", None)
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                      and issubclass(a, BaseModel)), None)
        if model is None:
            return ""
    return ", ".join(model.model_fields)


def _ssh_key_errors(data: dict) -> dict[str, str]:
    """Per-line errors for [ssh] authorized_keys, so the operator sees which line is bad."""
    keys = data.get("ssh", {}).get("authorized_keys") if isinstance(data.get("ssh"), dict) else None
    out: dict[str, str] = {}
    if isinstance(keys, list):
        for i, key in enumerate(keys):
            if not isinstance(key, str):
                out[f"ssh.authorized_keys[{i}]"] = "must be a string holding one key line"
                continue
            try:
                check_ssh_key(key)
            except ValueError as exc:
                out[f"ssh.authorized_keys[{i}]"] = str(exc)
    return out


def parse(data: dict[str, Any], *, partial: bool = False) -> Fleet | None:
    """Validate a fleet file's parsed contents. With `partial` (a per-card override, which may
    set a single key of a table such as [wifi] psk), required keys may be missing."""
    errors: dict[str, str] = {}
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        fleet = None
        key_errors = _ssh_key_errors(data)
        errors.update(key_errors)
        for err in exc.errors():
            name = _field_name(err["loc"])
            if key_errors and name.startswith("ssh.authorized_keys"):
                continue
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(err["loc"])
                kind = "table" if len(err["loc"]) == 1 else "key"
                errors.setdefault(name, f"unknown {kind}" + (f" (allowed: {allowed})" if allowed else ""))
            elif err["type"] == "missing":
                if not partial:
                    errors.setdefault(name, "is required")
            else:
                errors.setdefault(name, err["msg"].removeprefix("Value error, "))
    if isinstance(data.get("settings"), dict):
        try:
            validate_settings(data["settings"])
        except SettingsError as exc:
            errors.update({f"settings.{k}": v for k, v in exc.errors.items()})
    if errors:
        raise FleetError(errors)
    return fleet


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML of `path`; unreadable or malformed files raise FleetError naming the file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError({"file": f"{path}: no such file"}) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FleetError({"file": f"{path}: not valid TOML ({exc})"}) from None
    except OSError as exc:
        raise FleetError({"file": f"{path}: cannot be read ({exc.strerror})"}) from None


def load(path: Path) -> Fleet:
    """A whole fleet file, validated: FleetError names the file or each bad field."""
    fleet = parse(read_toml(path))
    assert fleet is not None, "with every key required, parse returns a Fleet or raises"
    return fleet


def read_table(path: Path | None, name: str) -> Any:
    """One table of a fleet file, validated on its own: the settings page, the USB gadget and the
    daemon each depend only on their own table being right. Returns the table's model (Usb, Web,
    ...), or for [settings] the dict of setting defaults; defaults when there is no file or no
    such table. FleetError names the file, the table and each bad key."""
    table: Any = {}
    if path is not None and Path(path).exists():
        table = read_toml(path).get(name, {})
    where = f"{path}: [{name}]"
    if not isinstance(table, dict):
        raise FleetError({where: "must be a table"})
    if name == "settings":
        try:
            validate_settings(table)
        except SettingsError as exc:
            raise FleetError({f"{where} {k}": v for k, v in exc.errors.items()}) from None
        return table
    model: Any = Fleet.model_fields[name].annotation
    model = next(a for a in getattr(model, "__args__", (model,)) if a is not type(None))  # Wifi | None
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        errors = {}
        for err in exc.errors():
            key = f"{where} {_field_name(err['loc'])}".rstrip()
            errors[key] = (f"unknown key (allowed: {', '.join(model.model_fields)})"
                           if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, "))
        raise FleetError(errors) from None


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, table by table and key by key (lists are replaced, not appended)."""
    merged = {name: dict(table) if isinstance(table, dict) else table for name, table in base.items()}
    for name, table in override.items():
        if isinstance(table, dict) and isinstance(merged.get(name), dict):
            merged[name].update(table)
        else:
            merged[name] = table
    return merged


def normalize_serial(raw: str) -> str:
    """A board serial as 16 lower-case hex digits (the Pi's /proc/device-tree/serial-number)."""
    serial = raw.strip().strip("\x00").lower()
    if not re.fullmatch(r"[0-9a-f]{1,16}", serial):
        raise ValueError(f"board serial {raw!r} is not hexadecimal")
    return serial.rjust(16, "0")


def effective(base: dict[str, Any], override: dict[str, Any] | None, serial: str) -> tuple[Fleet, str]:
    """The configuration one device runs with, and its hostname.

    The override is validated on its own first (so its errors name its own fields), then merged.
    Each device's USB serial number is its board serial unless the fleet file fixes one.
    """
    serial = normalize_serial(serial)
    if override is not None:
        parse(override, partial=True)
    fleet = parse(merge(base, override or {}))
    assert fleet is not None
    if fleet.usb.serial_number is None:
        fleet = fleet.model_copy(update={"usb": fleet.usb.model_copy(update={"serial_number": serial})})
    return fleet, render_hostname(fleet.device.hostname_pattern, serial)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(fleet: Fleet, *, secrets: bool = False) -> str:
    """The fleet as a TOML document. Without `secrets` the Wi-Fi passphrase is left out, so the
    file can be read by the (unprivileged) appliance services."""
    data = fleet.model_dump(exclude_none=True)
    if not secrets and "wifi" in data:
        data["wifi"].pop("psk", None)
    lines: list[str] = []
    for name, table in data.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
        lines.append("")
    return "\n".join(lines)


def describe(fleet: Fleet) -> str:
    """A one-paragraph summary of what a valid fleet file will do, for `fleet check`."""
    wifi = f"Wi-Fi {fleet.wifi.ssid!r} ({fleet.wifi.country})" if fleet.wifi else "no Wi-Fi"
    keys = len(fleet.ssh.authorized_keys)
    return (f"hostnames like {render_hostname(fleet.device.hostname_pattern, EXAMPLE_SERIAL)}; "
            f"USB {fleet.usb.vendor_id:04x}:{fleet.usb.product_id:04x} "
            f"{fleet.usb.manufacturer!r} {fleet.usb.product!r}; {wifi}; "
            f"SSH {f'on with {keys} key(s)' if keys else 'off'}; "
            f"web admin password {'set' if fleet.web.admin_password_hash else 'NOT set'}; "
            f"metrics token {'set' if fleet.web.metrics_token else 'not set'}; "
            f"{len(fleet.settings)} setting default(s)")


def hash_password(password: str) -> str:
    from werkzeug.security import generate_password_hash
    return generate_password_hash(password, method="scrypt")


def main(args: list[str] | argparse.Namespace) -> int:
    """`blurcam fleet check FILE [--override]` and `blurcam fleet hash-password`."""
    if isinstance(args, argparse.Namespace):  # the CLI's own `fleet check FILE` parse
        args = [args.action, str(args.file)]
    parser = argparse.ArgumentParser(prog="blurcam fleet", description="Check fleet files.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a fleet file or a per-card override (same schema)")
    check.add_argument("file", type=Path)
    check.add_argument("--override", action="store_true",
                       help="FILE is a per-card override: keys may be left out of any table")
    sub.add_parser("hash-password",
                   help="read a password (prompt, or stdin when piped) and print its hash "
                        "for [web] admin_password_hash")
    opts = parser.parse_args(args)

    if opts.command == "hash-password":
        password = getpass.getpass("Admin password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            print("error: the admin password must have at least 8 characters", file=sys.stderr)
            return 1
        print(hash_password(password))
        return 0

    try:
        fleet = parse(read_toml(opts.file), partial=opts.override)
    except FleetError as exc:
        print(f"{opts.file}: invalid fleet file", file=sys.stderr)
        for field, reason in exc.errors.items():
            print(f"  {field}: {reason}", file=sys.stderr)
        return 1
    print(f"{opts.file}: OK" + (f": {describe(fleet)}" if fleet else " (as a per-card override)"))
    return 0
