"""`blurcam web`: the settings page in its own process, served by waitress."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import waitress

from . import create_app

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "0.0.0.0:80"
DEFAULT_CONTROL_SOCKET = "/run/blurcam/control.sock"
DEFAULT_STATE_DIR = "/var/lib/blurcam-web"
DEFAULT_FLEET_FILE = "/etc/blurcam/fleet.toml"
# Enough for three preview polls, a status poll and a settings change from two browsers at once.
THREADS = 8


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port), with a clear error for anything else."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen must be HOST:PORT, e.g. 127.0.0.1:8080 (got {listen!r})")
    return host.strip("[]"), int(port)


def serve(listen: str, control_socket: str | os.PathLike, state_dir: str | os.PathLike,
          fleet_file: str | os.PathLike | None = DEFAULT_FLEET_FILE) -> None:
    """Run the web process until it is stopped. BLURCAM_ADMIN_PASSWORD, if set, is the password."""
    host, port = parse_listen(listen)
    app = create_app({
        "STATE_DIR": Path(state_dir),
        "CONTROL_SOCKET": Path(control_socket),
        "FLEET_FILE": Path(fleet_file) if fleet_file else None,
        "ADMIN_PASSWORD": os.environ.get("BLURCAM_ADMIN_PASSWORD") or None,
    })
    log.info("settings page on http://%s:%d (control socket %s)", host, port, control_socket)
    waitress.serve(app, host=host, port=port, threads=THREADS, ident="blurcam",
                   # Slow clients must not hold threads: waitress buffers, the app never blocks on them.
                   channel_timeout=60, clear_untrusted_proxy_headers=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `blurcam web` options (shared with appliance/cli.py)."""
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address to serve the page on (default {DEFAULT_LISTEN})")
    parser.add_argument("--control-socket", default=DEFAULT_CONTROL_SOCKET, metavar="PATH",
                        help=f"the daemon's control socket (default {DEFAULT_CONTROL_SOCKET})")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                        help=f"where the password hash and session key live (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--fleet-file", default=DEFAULT_FLEET_FILE, metavar="PATH",
                        help=f"fleet config with [web] admin_password_hash (default {DEFAULT_FLEET_FILE})")


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    """`blurcam web`: from a command line, or from arguments appliance/cli.py already parsed."""
    if isinstance(argv, argparse.Namespace):
        return run(argv)
    parser = argparse.ArgumentParser(prog="blurcam web", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Entry point for an already parsed `blurcam web` command line."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(args.listen, args.control_socket or DEFAULT_CONTROL_SOCKET,
              args.state_dir or DEFAULT_STATE_DIR, args.fleet_file)
    except (ValueError, OSError) as exc:
        log.error("blurcam web: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
