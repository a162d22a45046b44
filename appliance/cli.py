"""The `blurcam` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from appliance import __version__

DEFAULT_STATE_DIR = Path("/var/lib/blurcam/pipeline")  # blurcam.service's StateDirectory
DEFAULT_FLEET_FILE = Path("/etc/blurcam/fleet.toml")
DEFAULT_CONTROL_SOCKET = Path("/run/blurcam/control.sock")
DEFAULT_WEB_LISTEN = "127.0.0.1:8080"  # the device's unit listens on 0.0.0.0:80 explicitly
DEFAULT_WEB_STATE_DIR = Path("/var/lib/blurcam-web")


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def frame_size(text: str) -> tuple[int, int]:
    """A WIDTHxHEIGHT argument, e.g. 1280x720."""
    width, x, height = text.partition("x")
    if not (x and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT in pixels (e.g. 1280x720)")
    return int(width), int(height)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=("auto", "general", "landscape"), default="auto",
                   help="auto: the landscape model for 16:9 frames, the general one for 4:3")
    p.add_argument("--precision", choices=("int8", "float"), default="int8", help="model weights")


def _add_control_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=None,
                   help=f"the daemon's state directory (default {DEFAULT_STATE_DIR})")
    p.add_argument("--control-socket", type=Path, default=None,
                   help=f"the daemon's control socket (default: STATE_DIR/control.sock with "
                        f"--state-dir, else {DEFAULT_CONTROL_SOCKET})")


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

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=_HelpWithDefaults, **kwargs)

    run = command("run", help="the appliance daemon: camera, model, USB webcam, control socket")
    run.add_argument("--source", default="auto",
                     help="auto | demo | file:PATH | v4l2:/dev/videoN | picamera2")
    run.add_argument("--web", metavar="HOST:PORT", help="also serve the settings page here")
    run.add_argument("--fleet-file", type=Path, default=DEFAULT_FLEET_FILE, help="the fleet configuration")
    _add_control_args(run)

    proc = command("process", help="run the pipeline on an image or video file",
                   description="Blur (or replace) the background of a photo or a video. Videos are "
                               "written as H.264 in MP4/MOV/MKV, which browsers play, with the "
                               "input's sound.")
    proc.add_argument("input", help="a photo (JPEG, PNG, BMP, WebP, TIFF) or a video FFmpeg reads")
    proc.add_argument("output", help="photo: .jpg .png .bmp .webp; video: .mp4 .m4v .mov .mkv")
    proc.add_argument("--effect", choices=("blur", "replace", "none", "privacy"), default=None,
                      help="what happens to the background (default: blur; replace with --background)")
    proc.add_argument("--background", metavar="IMAGE",
                      help="picture to put behind the person; implies --effect replace")
    proc.add_argument("--blur-strength", type=int, default=60, metavar="1..100", help="how strong the blur is")
    proc.add_argument("--framing", default="off", help="off | auto: keep the person framed, head and shoulders")
    proc.add_argument("--framing-zoom", type=float, default=2.0, help="the most auto-framing may zoom in, 1.0..3.0")
    proc.add_argument("--framing-speed", default="normal", help="slow | normal | fast")
    _add_model_args(proc)

    bench = command("bench", help="per-stage timings and frames per second")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--size", action="append", type=frame_size, metavar="WxH",
                       help="only these sizes (repeatable; default 640x480, 1280x720, 1920x1080)")
    bench.add_argument("--frames", type=int, default=60, help="frames timed one by one per size")
    bench.add_argument("--seconds", type=float, default=3.0, help="threaded measurement time per size")
    bench.add_argument("--carry", action="store_true",
                       help="instead: own masks vs older masks pasted or carried by optical flow")
    _add_model_args(bench)

    status = command("status", help="the running daemon's status: state, fps, timings, USB, temperature")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    _add_control_args(status)

    selftest = command("selftest", help="check the pipeline on demo frames against ground truth")
    selftest.add_argument("--live", action="store_true",
                          help="run the threaded pipeline on moving demo scenes; per-frame mask IoU")
    selftest.add_argument("--size", type=frame_size, metavar="WxH", help="frame size for --live (default 640x360)")
    _add_model_args(selftest)

    web = command("web", help="the settings page (talks to the daemon over its control socket)")
    add_web_arguments(web)

    gadget = command("gadget", help="build, remove or show the USB gadget (configfs)")
    gadget.add_argument("action", choices=("up", "down", "status"))
    gadget.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the daemon's state directory")
    gadget.add_argument("--fleet-file", type=Path, default=DEFAULT_FLEET_FILE, help="the fleet configuration")
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
    from appliance.process import ProcessError, process_file
    effect = args.effect or ("replace" if args.background else "blur")
    if args.background and effect != "replace":
        raise ProcessError(f"--background is only used with --effect replace, not --effect {effect}")
    frames = process_file(args.input, args.output,
                          {"effect": effect, "blur_strength": args.blur_strength,
                           "model": args.model, "precision": args.precision, "framing": args.framing,
                           "framing_zoom": args.framing_zoom, "framing_speed": args.framing_speed},
                          background=args.background)
    print(f"wrote {args.output} ({frames} frame{'s' if frames != 1 else ''})")
    return 0


def _cmd_status(args) -> int:
    from appliance.control import ControlClient, ControlError
    from appliance.daemon import default_control_socket
    path = args.control_socket or default_control_socket(args.state_dir)
    try:
        status = ControlClient(path).status()
    except ControlError as exc:
        print(f"blurcam status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return 0


def format_status(status: dict, prefix: str = "") -> str:
    """The status as an aligned two-column table; nested objects as dotted names."""
    rows: list[tuple[str, str]] = []

    def walk(value, name: str) -> None:
        if isinstance(value, dict) and value:
            for key in value:
                walk(value[key], f"{name}.{key}" if name else str(key))
        elif isinstance(value, list):
            rows.append((name, ", ".join(map(str, value))))
        else:
            rows.append((name, "-" if value is None else str(value)))

    walk(status, prefix)
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


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
    if args.command == "status":
        return _cmd_status(args)
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
    elif args.command == "update" and args.update_command == "hawkbit":  # likewise
        args.hawkbit_args = extra + args.hawkbit_args
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
    from appliance.fleet import FleetError
    from appliance.process import ProcessError
    from appliance.segment import ModelError
    from appliance.settings import SettingsError
    from appliance.reset import ResetError
    from appliance.sources.base import SourceError
    from appliance.storage import StorageError
    try:
        return _dispatch(args)
    except (ProcessError, ModelError, SettingsError, FleetError, SourceError, StorageError, ResetError) as exc:
        print(f"blurcam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
