"""setup_logging: one line per event, levels the journal understands, plain stderr elsewhere."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.service import setup_logging
from tests.support import capabilities

# A child process logs an info line, a warning and an exception with its traceback.
CHILD = """
import logging, sys
from appliance.service import setup_logging
handler = setup_logging(sys.argv[1], use_journal_handler=False if sys.argv[2] == "stderr" else None)
print(type(handler).__name__, file=sys.stdout)
log = logging.getLogger("blurcam.test")
log.debug("hidden below the level")
log.info("camera started at %dx%d", 1280, 720)
log.warning("slow frame:\\n  %d ms", 180)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("compose failed")
"""


def run_child(tmp_path: Path, level: str, mode: str, journal_stream: str | None) -> tuple[str, list[str]]:
    """Runs CHILD with stderr in a file; journal_stream 'match' points JOURNAL_STREAM at that file."""
    stderr_path = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with open(stderr_path, "wb") as stderr:
        if journal_stream == "match":
            st = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        out = subprocess.run([sys.executable, "-c", CHILD, level, mode], env=env, stderr=stderr,
                             stdout=subprocess.PIPE, text=True, timeout=30, check=True).stdout
    return out.strip(), stderr_path.read_text().splitlines()


def test_outside_systemd_each_event_is_one_timestamped_stderr_line(tmp_path):
    handler, lines = run_child(tmp_path, "info", "auto", journal_stream=None)
    assert handler == "StreamHandler"
    assert len(lines) == 3, lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO blurcam.test: camera started at 1280x720", lines[0])
    assert lines[1].endswith("WARNING blurcam.test: slow frame: |   180 ms")
    assert "ERROR blurcam.test: compose failed | Traceback (most recent call last):" in lines[2]
    assert lines[2].endswith("ZeroDivisionError: division by zero")


def test_under_the_journal_without_systemd_python_lines_carry_syslog_priority_prefixes(tmp_path):
    handler, lines = run_child(tmp_path, "debug", "stderr", journal_stream="match")
    assert handler == "StreamHandler"
    assert lines[0] == "<7>blurcam.test: hidden below the level"
    assert lines[1] == "<6>blurcam.test: camera started at 1280x720"
    assert lines[2] == "<4>blurcam.test: slow frame: |   180 ms"
    assert lines[3].startswith("<3>blurcam.test: compose failed | Traceback")
    assert len(lines) == 4


def test_an_inherited_journal_stream_that_is_not_our_stderr_is_ignored(tmp_path):
    _, lines = run_child(tmp_path, "info", "auto", journal_stream="1:2")
    assert not lines[0].startswith("<") and " INFO " in lines[0]


@capabilities.needs(capabilities.module("systemd.journal", capabilities.SYSTEMD_PYTHON))
def test_under_the_journal_with_systemd_python_the_journal_handler_is_used(tmp_path):
    handler, lines = run_child(tmp_path, "info", "auto", journal_stream="match")
    assert handler == "JournalHandler"
    assert lines == []  # nothing duplicated onto stderr


def test_a_bad_level_is_rejected_by_name():
    with pytest.raises(ValueError, match="'loud'"):
        setup_logging("loud")


def test_setting_up_twice_replaces_the_handler_instead_of_doubling_lines():
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        first = setup_logging("info", environ={})
        second = setup_logging("warning", environ={})
        ours = [h for h in root.handlers if h in (first, second)]
        assert ours == [second] and root.level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
