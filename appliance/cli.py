"""The `blurcam` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from appliance import __version__

DEFAULT_STATE_DIR = Path("/var/lib/blurcam")
DEFAULT_FLEET_FILE = Path("/etc/blurcam/fleet.toml")
DEFAULT_CONTROL_SOCKET = Path("/run/blurcam/control.sock")
DEFAULT_WEB_LISTEN = "127.0.0.1:8080"  # the device's unit listens on 0.0.0.0:80 explicitly
DEFAULT_WEB_STATE_DIR = Path("/var/lib/blurcam-web")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=("auto", "general", "landscape"), default="auto",
                   help="auto (default): the landscape model for 16:9 frames, the general one for 4:3")
    p.add_argument("--precision", choices=("int8", "float"), default="int8")


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """The `blurcam web` options (web/server.py's own command line uses them too)."""
    parser.add_argument("--listen", default=DEFAULT_WEB_LISTEN, metavar="HOST:PORT",
                        help="address to serve the page on")
    parser.add_argument("--control-socket", type=Path, default=None, metavar="PATH",
                        help=f"the daemon's control socket (default: STATE_DIR/control.sock with "
                             f"--state-dir, else {DEFAULT_CONTROL_SOCKET})")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help=f"where the password hash and session key live (default {DEFAULT_WEB_STATE_DIR})")
    parser.add_argument("--fleet-file", type=Path, default=DEFAULT_FLEET_FILE, metavar="PATH",
                        help="fleet config with [web] admin_password_hash and metrics_token")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="another name the page may be reached by, e.g. a TLS proxy's "
                             "(repeatable; its own names and addresses are always allowed)")


def _add_state_args(p: argparse.ArgumentParser, control: bool = True) -> None:
    p.add_argument("--state-dir", type=Path, default=None,
                   help=f"the daemon's settings (default {DEFAULT_STATE_DIR})")
    p.add_argument("--web-state-dir", type=Path, default=None,
                   help=f"the settings page's password hash (default {DEFAULT_WEB_STATE_DIR}, "
                        "or STATE_DIR when --state-dir is given, as `blurcam run --web` uses it)")
    if control:
        p.add_argument("--control-socket", type=Path, default=None,
                       help=f"default: STATE_DIR/control.sock with --state-dir, else "
                            f"{DEFAULT_CONTROL_SOCKET}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blurcam", description="USB webcam with AI background blur")
    parser.add_argument("--version", action="version", version=f"blurcam {__version__}")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the appliance daemon: camera, model, USB webcam, control socket")
    run.add_argument("--source", default="auto",
                     help="auto | demo | file:PATH | v4l2:/dev/videoN | picamera2 (default: auto)")
    run.add_argument("--web", metavar="HOST:PORT", help="also serve the settings page here")
    run.add_argument("--state-dir", type=Path, default=None,
                     help=f"where settings live (default {DEFAULT_STATE_DIR})")
    run.add_argument("--fleet-file", type=Path, default=DEFAULT_FLEET_FILE)
    run.add_argument("--control-socket", type=Path, default=None,
                     help="default: /run/blurcam/control.sock, or STATE_DIR/control.sock with --state-dir")

    proc = sub.add_parser("process", help="run the pipeline on an image or video file")
    proc.add_argument("input")
    proc.add_argument("output")
    proc.add_argument("--effect", default="blur", help="blur | replace | none")
    proc.add_argument("--background", help="image to put behind the person (--effect replace)")
    proc.add_argument("--blur-strength", type=int, default=60, help="1..100")
    proc.add_argument("--framing", default="off", help="off | auto: keep the person framed, head and shoulders")
    proc.add_argument("--framing-zoom", type=float, default=2.0, help="the most auto-framing may zoom in, 1.0..3.0")
    proc.add_argument("--framing-speed", default="normal", help="slow | normal | fast")
    _add_model_args(proc)

    bench = sub.add_parser("bench", help="per-stage timings and frames per second")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--size", action="append", metavar="WxH", help="only these sizes (repeatable)")
    bench.add_argument("--frames", type=int, default=60)
    bench.add_argument("--seconds", type=float, default=3.0, help="threaded measurement time per size")
    _add_model_args(bench)

    selftest = sub.add_parser("selftest", help="check the pipeline on demo frames against ground truth")
    selftest.add_argument("--live", action="store_true",
                          help="run the threaded pipeline on moving demo scenes; per-frame mask IoU")
    selftest.add_argument("--size", metavar="WxH", help="frame size for --live (default 640x360)")
    _add_model_args(selftest)

    web = sub.add_parser("web", help="the settings page (talks to the daemon over its control socket)")
    add_web_arguments(web)

    gadget = sub.add_parser("gadget", help="build, remove or show the USB gadget (configfs)")
    gadget.add_argument("action", choices=("up", "down", "status"))
    gadget.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    gadget.add_argument("--fleet-file", type=Path, default=DEFAULT_FLEET_FILE)
    gadget.add_argument("--udc", help="USB device controller to bind (default: the first in /sys/class/udc)")

    update = sub.add_parser("update", help="A/B updates: install BUNDLE|URL, status, confirm, health")
    from appliance.update import build_parser as build_update_parser
    build_update_parser(update)

    reset = sub.add_parser("reset", help="factory reset: default settings, no uploaded backgrounds, "
                                         "a new generated password (printed)")
    _add_state_args(reset)
    reset.add_argument("--fleet-file", type=Path, default=DEFAULT_FLEET_FILE)
    reset.add_argument("--from-boot-flag", type=Path, metavar="FLAG",
                       help="reset only if FLAG exists (e.g. /boot/firmware/blurcam-reset); write the "
                            "new password beside it in blurcam-password.txt, then remove FLAG")

    password = sub.add_parser("password", help="password reset: set and print a new generated "
                                               "password for the settings page")
    password.add_argument("action", choices=("reset",))
    _add_state_args(password, control=False)

    fleet = sub.add_parser("fleet", help="fleet configuration: check FILE [--override], hash-password",
                           add_help=False)
    fleet.add_argument("fleet_args", nargs=argparse.REMAINDER)
    return parser


def _cmd_run(args) -> int:
    from appliance.daemon import default_control_socket, run_daemon
    state_dir = args.state_dir or DEFAULT_STATE_DIR
    control = args.control_socket or default_control_socket(args.state_dir)
    return run_daemon(args.source, state_dir, args.fleet_file, control, args.web)


def _web_state_dir(args) -> Path:
    return args.web_state_dir or args.state_dir or DEFAULT_WEB_STATE_DIR


def _cmd_reset(args) -> int:
    from appliance.daemon import default_control_socket
    from appliance.reset import factory_reset, reset_from_boot_flag
    state_dir = args.state_dir or DEFAULT_STATE_DIR
    control = args.control_socket or default_control_socket(args.state_dir)
    if args.from_boot_flag:
        outcome = reset_from_boot_flag(args.from_boot_flag, state_dir, _web_state_dir(args),
                                       control, args.fleet_file)
        if outcome is None:
            print(f"no reset flag at {args.from_boot_flag}: nothing to do")
            return 0
    else:
        outcome = factory_reset(state_dir, _web_state_dir(args), control, args.fleet_file)
    print(f"Factory reset done: {outcome.settings}; uploaded backgrounds removed.")
    print(f"New password for the settings page: {outcome.password}")
    if args.from_boot_flag:
        print(f"(also written to {args.from_boot_flag.parent / 'blurcam-password.txt'})")
    return 0


def _cmd_password(args) -> int:
    from web.auth import set_new_password
    password = set_new_password(_web_state_dir(args))
    print(f"New password for the settings page: {password}")
    print("Everyone logged in to the page is logged out.")
    return 0


def _cmd_process(args) -> int:
    from appliance.process import process_file
    frames = process_file(args.input, args.output,
                          {"effect": args.effect, "blur_strength": args.blur_strength,
                           "model": args.model, "precision": args.precision, "framing": args.framing,
                           "framing_zoom": args.framing_zoom, "framing_speed": args.framing_speed},
                          background=args.background)
    print(f"wrote {args.output} ({frames} frame{'s' if frames != 1 else ''})")
    return 0


def _cmd_web(args) -> int:
    from appliance.lifetime import end_with_parent
    end_with_parent()  # started by `blurcam run --web`: do not outlive the daemon
    from appliance.daemon import default_control_socket
    from web.server import main as web_main
    if args.control_socket is None:
        args.control_socket = default_control_socket(args.state_dir)
    return web_main(args)


def _dispatch(args) -> int:
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "process":
        return _cmd_process(args)
    if args.command == "bench":
        from appliance.bench import main as bench_main
        return bench_main(args)
    if args.command == "selftest":
        from appliance.selftest import main as selftest_main
        return selftest_main(args)
    if args.command == "web":
        return _cmd_web(args)
    if args.command == "gadget":
        from appliance.uvc.configfs import main as gadget_main
        return gadget_main(args)
    if args.command == "update":
        from appliance.update import main as update_main
        return update_main(args)
    if args.command == "reset":
        return _cmd_reset(args)
    if args.command == "password":
        return _cmd_password(args)
    if args.command == "fleet":
        from appliance.fleet import main as fleet_main
        return fleet_main(args.fleet_args)
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "fleet":  # its own parser takes the rest (including --help)
        args.fleet_args = extra + args.fleet_args
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from appliance.memory import tune_allocator
    tune_allocator()
    try:
        from appliance.service import setup_logging
        setup_logging(args.log_level)
    except ImportError:
        logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # Errors a user can fix get one clear line and a non-zero exit, never a traceback.
    from appliance.process import ProcessError
    from appliance.segment import ModelError
    from appliance.settings import SettingsError
    from appliance.reset import ResetError
    from appliance.sources.base import SourceError
    from appliance.storage import StorageError
    try:
        return _dispatch(args)
    except (ProcessError, ModelError, SettingsError, SourceError, StorageError, ResetError) as exc:
        print(f"blurcam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
