"""`blurcam web`: the settings page in its own process, served by waitress."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path

import waitress

from appliance.cli import DEFAULT_CONTROL_SOCKET, DEFAULT_FLEET_FILE, DEFAULT_WEB_STATE_DIR, add_web_arguments

from . import MAX_REQUEST_BYTES, create_app

log = logging.getLogger(__name__)

# Enough for three preview polls, a status poll and a settings change from two browsers at once.
THREADS = 8


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port), with a clear error for anything else."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen must be HOST:PORT, e.g. 127.0.0.1:8080 (got {listen!r})")
    return host.strip("[]"), int(port)


def listen_socket(listen: str) -> socket.socket:
    """A socket bound and listening on `listen`, or OSError in one sentence (port taken, ...)."""
    host, port = parse_listen(listen)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise OSError(f"cannot serve the settings page on {listen}: unknown host ({exc.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot serve the settings page on {listen}: "
                      f"{(exc.strerror or str(exc)).lower()}") from None
    return sock


def check_listen(listen: str) -> None:
    """Raise what listen_socket would (for `blurcam run --web`, before it starts anything)."""
    listen_socket(listen).close()


def serve(listen: str, control_socket: str | os.PathLike, state_dir: str | os.PathLike,
          fleet_file: str | os.PathLike | None = DEFAULT_FLEET_FILE,
          allowed_hosts: list[str] | None = None) -> None:
    """Run the web process until it is stopped. BLURCAM_ADMIN_PASSWORD, if set, is the password."""
    # The port first: a busy port must not cost a generated password nobody will ever see.
    sock = listen_socket(listen)
    app = create_app({
        "STATE_DIR": Path(state_dir),
        "CONTROL_SOCKET": Path(control_socket),
        "FLEET_FILE": Path(fleet_file) if fleet_file else None,
        "ADMIN_PASSWORD": os.environ.get("BLURCAM_ADMIN_PASSWORD") or None,
        "ALLOWED_HOSTS": allowed_hosts or [],
    })
    log.info("settings page on http://%s/ (control socket %s)", listen, control_socket)
    waitress.serve(app, sockets=[sock], threads=THREADS, ident="blurcam",
                   # Slow clients must not hold threads: waitress buffers, the app never blocks on them.
                   channel_timeout=60, clear_untrusted_proxy_headers=True,
                   # A body larger than the largest upload is refused from its Content-Length, unread.
                   max_request_body_size=MAX_REQUEST_BYTES)


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    """`blurcam web`: from a command line, or from arguments appliance/cli.py already parsed."""
    if isinstance(argv, argparse.Namespace):
        return run(argv)
    parser = argparse.ArgumentParser(prog="blurcam web", description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_web_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Entry point for an already parsed `blurcam web` command line."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        serve(args.listen, args.control_socket or DEFAULT_CONTROL_SOCKET,
              args.state_dir or DEFAULT_WEB_STATE_DIR, args.fleet_file, args.allow_host)
    except (ValueError, OSError) as exc:
        log.error("blurcam web: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
