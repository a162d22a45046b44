"""Factory reset and password reset, run on the device itself: no login needed.

`blurcam reset` forgets the user's settings (the defaults and the fleet file apply again),
uploaded backgrounds and the page's presets, and sets a new generated password. A running daemon
does its part itself, so the camera changes at once; the settings page notices the new password
file, and ends every session, on its next request. Nothing needs a restart.

At boot, `blurcam reset --from-boot-flag /boot/firmware/blurcam-reset` does the same when an
operator has put that file on the SD card's boot partition from a PC, and leaves the new password
beside it in `blurcam-password.txt`, where the operator will look when the card is back in the PC.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.storage import StorageError, remove_durably, write_atomically

log = logging.getLogger(__name__)

BOOT_FLAG_NAME = "blurcam-reset"  # what an operator creates on the boot partition
PASSWORD_NOTE_NAME = "blurcam-password.txt"  # what the reset leaves beside it


class ResetError(RuntimeError):
    """The reset could not be done; the message says why and what to do."""


@dataclass
class ResetOutcome:
    password: str
    settings: str  # how the settings were reset, for the operator


def factory_reset(state_dir: Path, web_state_dir: Path, control_socket: Path,
                  fleet_file: Path | None, timeout: float = 10.0) -> ResetOutcome:
    """Reset settings and backgrounds (through the daemon if it runs), then the page's presets
    and password.

    A StorageError from the first step means nothing was changed; a failure after it says what
    was already done."""
    from appliance.control import ControlClient, ControlError, ServiceNotRunning
    try:
        ControlClient(control_socket, timeout=timeout).factory_reset()
        how = "the running camera service has reset its settings"
    except ServiceNotRunning:
        reset_files(Path(state_dir), fleet_file)
        how = "settings reset on disk (the camera service was not running)"
    except ControlError as exc:
        # Resetting the files behind a running daemon's back would be undone by its next save.
        raise ResetError(f"the camera service did not take the reset ({exc}); stop it "
                         "(systemctl stop blurcam) and run this again") from None
    from web.auth import set_new_password
    from web.presets import PRESETS_FILE
    try:
        remove_durably(Path(web_state_dir) / PRESETS_FILE, what="presets")
        password = set_new_password(Path(web_state_dir))
    except StorageError as exc:
        raise ResetError(f"{how}, but the page's presets and password could not be reset: "
                         f"{exc.reason}; run this again once that is fixed") from None
    log.warning("factory reset done: %s; new admin password set", how)
    return ResetOutcome(password, how)


def reset_files(state_dir: Path, fleet_file: Path | None) -> None:
    """The daemon's part, done on its files while it is not running."""
    from appliance.background_store import remove_backgrounds
    from appliance.settings import SettingsStore
    new = SettingsStore(state_dir, fleet_file).reset()
    remove_backgrounds(state_dir, keep=new.background)


def reset_from_boot_flag(flag: Path, state_dir: Path, web_state_dir: Path, control_socket: Path,
                         fleet_file: Path | None, timeout: float = 10.0) -> ResetOutcome | None:
    """Factory reset if `flag` exists (None if not). The new password is written to
    blurcam-password.txt beside the flag, then the flag is removed.

    Every step survives a power cut: until the flag is gone the next boot simply resets again
    (with another new password, written over the note), and the note never holds a password
    that is not the one in force.
    """
    flag = Path(flag)
    if not flag.exists():
        return None
    note = flag.parent / PASSWORD_NOTE_NAME
    # First, so that a read-only or full boot partition stops us before anything is reset, and
    # so that a note from an earlier reset is never mistaken for this one's.
    write_atomically(note, b"A factory reset of this BlurCam started but has not finished.\r\n"
                           b"Put the card back in the camera and let it start once more.\r\n",
                     what="the password note", mode=None)
    outcome = factory_reset(state_dir, web_state_dir, control_socket, fleet_file, timeout)
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    # CRLF: the note is read on whatever PC the card is put into.
    text = (f"BlurCam factory reset done ({when}).\r\n"
            f"Settings are back to their defaults and uploaded backgrounds are removed.\r\n"
            f"The settings page password is now: {outcome.password}\r\n"
            f"Change it on the page, then delete this file.\r\n")
    write_atomically(note, text.encode(), what="the password note", mode=None)
    remove_durably(flag, what="the reset flag's removal")
    return outcome
