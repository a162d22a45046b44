"""Saving files: whole or not at all, under real faults (full and read-only filesystems, a writer
killed mid-write), errors in plain words, and the temp files a power cut leaves removed."""

from __future__ import annotations

import errno
import json
import os
import random
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.storage import StorageError, plain_reason, remove_durably, remove_stale_temp_files, write_atomically
from tests.support import capabilities, faultfs

needs_faults = capabilities.needs(faultfs.unavailable())


def test_a_write_lands_whole_private_to_the_service_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "state" / "settings.json"
    write_atomically(target, b"first")
    write_atomically(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["settings.json"]


def test_stale_temp_files_of_ours_are_removed_and_nothing_else(tmp_path):
    ours = [".settings.json.tmp-a1b2c3d4", ".settings.json.k2j3h4_x",  # today's and older names
            ".background-0123456789ab.jpg.tmp-zz"]
    theirs = ["settings.json", "settings.json.broken", ".settings.jsonx", "notes.txt",
              ".web-secret.key.tmp-1"]  # the last is the web process's, not asked for here
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    # We never make directories or symlinks with these names: not ours, so left alone.
    (tmp_path / ".settings.json.d").mkdir()
    (tmp_path / ".settings.json.link").symlink_to(tmp_path / "notes.txt")
    removed = remove_stale_temp_files(tmp_path, ("settings.json", "background-*.jpg"))
    assert sorted(removed) == sorted(ours)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == set(theirs) | {".settings.json.d", ".settings.json.link"}


def test_a_pattern_that_is_not_a_file_name_of_ours_is_refused(tmp_path):
    for bad in ("../settings.json", ".settings.json", "a/b"):
        with pytest.raises(ValueError):
            remove_stale_temp_files(tmp_path, (bad,))


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "storage is full"),
    (errno.EDQUOT, "storage is full"),
    (errno.EROFS, "storage is read-only"),
    (errno.EIO, "failed to write"),
    (errno.EACCES, "may not write"),
])
def test_the_reason_for_a_failed_write_is_in_plain_words(code, words):
    exc = OSError(code, os.strerror(code), "/var/lib/blurcam/.settings.json.tmp-x")
    assert words in plain_reason(exc)
    message = str(StorageError.from_os_error("settings", exc))
    assert message.startswith("Settings not saved: ") and message.endswith("Nothing was changed.")
    assert "/var/lib" not in message and "Errno" not in message


# A writer process that saves numbered, self-checking versions of one file as fast as it can.
_WRITER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from appliance.storage import write_atomically
    target, n = Path(sys.argv[1]), int(sys.argv[2])
    print("ready", flush=True)
    while True:
        n += 1
        body = {"n": n, "pad": "x" * (20000 + 7919 * n % 40000)}  # many pages: writes take time
        write_atomically(target, json.dumps(body).encode())
""")


def _pad_length(n: int) -> int:
    return 20000 + 7919 * n % 40000 if n else 0


def test_a_writer_killed_at_random_moments_leaves_the_old_or_the_new_file_never_torn(tmp_path):
    """The process-level crash: SIGKILL in the middle of writes, 30 times. A version that
    writes in place leaves an empty or half-written file here within a few kills."""
    target = tmp_path / "settings.json"
    write_atomically(target, json.dumps({"n": 0, "pad": ""}).encode())
    rng = random.Random(13)
    written = 0
    for _ in range(30):
        last = json.loads(target.read_text())["n"]
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(last)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.1))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        data = target.read_bytes()
        try:
            body = json.loads(data)
        except ValueError:
            pytest.fail(f"after a kill the file is torn: {len(data)} bytes, starting {data[:30]!r}")
        assert body["n"] >= last, "an older version came back"
        assert len(body["pad"]) == _pad_length(body["n"])
        written += body["n"] - last
    assert written > 30, "the writer was killed before it wrote anything: the test proves nothing"
    remove_stale_temp_files(tmp_path, ("settings.json",))  # what a kill left, as at start-up
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


@needs_faults
def test_on_a_full_disk_a_write_fails_in_plain_words_and_the_old_file_stays_whole():
    def scenario(directory: Path) -> dict:
        target = directory / "settings.json"
        write_atomically(target, b'{"blur_strength": 70}')
        faultfs.fill(directory)
        try:
            # Bigger than the old file: written in place, it would cut the old one short.
            write_atomically(target, b'{"blur_strength": 71, "padding": "' + b"x" * 10000 + b'"}',
                             what="settings")
            error = None
        except StorageError as exc:
            error = (str(exc), exc.errno)
        (directory / "filler").unlink()
        return {"error": error, "file": target.read_bytes(),
                "names": sorted(p.name for p in directory.iterdir())}

    out = faultfs.in_private_tmpfs(scenario, size="64k")
    assert out["error"] == (
        "Settings not saved: the device's storage is full. Nothing was changed.", errno.ENOSPC)
    assert out["file"] == b'{"blur_strength": 70}'
    assert out["names"] == ["settings.json"]  # the temp file did not stay behind


@needs_faults
def test_on_a_read_only_disk_a_write_and_a_removal_fail_in_plain_words_and_change_nothing():
    def scenario(directory: Path) -> dict:
        target = directory / "settings.json"
        write_atomically(target, b"{}")
        faultfs.remount(directory, read_only=True)
        errors = []
        for action in (lambda: write_atomically(target, b'{"mirror": true}', what="settings"),
                       lambda: remove_durably(target, what="settings")):
            try:
                action()
                errors.append(None)
            except StorageError as exc:
                errors.append(str(exc))
        return {"errors": errors, "file": target.read_bytes()}

    out = faultfs.in_private_tmpfs(scenario)
    assert out["errors"] == ["Settings not saved: the device's storage is read-only. "
                             "Nothing was changed."] * 2
    assert out["file"] == b"{}"
