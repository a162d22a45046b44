"""tools/compare_test_times.py: tests that moved are matched by name and parametrization, a name
used twice is told apart by file name, and what cannot be told apart is left unmatched and listed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "compare_test_times.py"
_spec = importlib.util.spec_from_file_location("compare_test_times", SCRIPT)
assert _spec and _spec.loader
ctt = importlib.util.module_from_spec(_spec)
sys.modules["compare_test_times"] = ctt  # dataclasses look their module up by name
_spec.loader.exec_module(ctt)


def junit(path: Path, cases: list[tuple[str, str, float, str]], total: float) -> Path:
    """A pytest-style JUnit file: (classname, name, seconds, outcome) per test case."""
    body = {"passed": "", "skipped": '<skipped message="no qemu"/>',
            "failed": '<failure message="assert 1 == 2"/>', "error": '<error message="boom"/>'}
    rows = "".join(f'<testcase classname="{c}" name="{n}" time="{t}">{body[o]}</testcase>'
                   for c, n, t, o in cases)
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" time="{total}">'
                    f"{rows}</testsuite></testsuites>")
    return path


OLD = [
    ("tests.picamera2.test_sources", "test_open[v4l2-640x360]", 2.0, "passed"),  # moved below
    ("tests.web.test_auth.TestLogin", "test_login_ok", 1.0, "passed"),  # a class, moved
    ("tests.core.test_one", "test_same_name", 3.0, "passed"),  # the name twice: told by file
    ("tests.core.test_two", "test_same_name", 4.0, "passed"),
    ("tests.a.test_x", "test_twin", 1.0, "passed"),  # twice with the same file name: ambiguous
    ("tests.b.test_x", "test_twin", 1.0, "passed"),
    ("tests.core.test_gone", "test_removed", 5.0, "passed"),
    ("tests.vm.test_vm", "test_boots", 0.0, "skipped"),
]
NEW = [
    ("tests.appliance.sources.test_init", "test_open[v4l2-640x360]", 2.5, "passed"),
    ("tests.appliance.sources.test_init", "test_open[v4l2-1280x720]", 9.0, "passed"),  # new param
    ("tests.web.test_auth.TestLogin", "test_login_ok", 1.5, "passed"),
    ("tests.appliance.test_one", "test_same_name", 3.0, "failed"),
    ("tests.appliance.test_two", "test_same_name", 6.0, "passed"),
    ("tests.appliance.a.test_x", "test_twin", 1.0, "passed"),
    ("tests.appliance.b.test_x", "test_twin", 1.0, "passed"),
    ("tests.appliance.uvc.test_vm", "test_boots", 100.0, "passed"),  # skipped before: not summed
]


@pytest.fixture
def runs(tmp_path):
    return junit(tmp_path / "old.xml", OLD, 20.0), junit(tmp_path / "new.xml", NEW, 130.0)


def test_classnames_become_files_and_classes():
    assert ctt.split_classname("tests.web.test_auth.TestLogin") == ("tests/web/test_auth.py", "TestLogin")
    assert ctt.split_classname("tests.web.test_api") == ("tests/web/test_api.py", "")


def test_moved_tests_are_matched_by_name_and_parametrization_and_twins_by_file_name(runs):
    old, _ = ctt.read_junit(runs[0])
    new, _ = ctt.read_junit(runs[1])
    pairs, old_only, new_only = ctt.match(old, new)
    matched = {(o.label, n.label) for o, n in pairs}
    assert matched == {
        ("tests/picamera2/test_sources.py::test_open[v4l2-640x360]",
         "tests/appliance/sources/test_init.py::test_open[v4l2-640x360]"),
        ("tests/web/test_auth.py::TestLogin::test_login_ok", "tests/web/test_auth.py::TestLogin::test_login_ok"),
        ("tests/core/test_one.py::test_same_name", "tests/appliance/test_one.py::test_same_name"),
        ("tests/core/test_two.py::test_same_name", "tests/appliance/test_two.py::test_same_name"),
        ("tests/vm/test_vm.py::test_boots", "tests/appliance/uvc/test_vm.py::test_boots"),
    }
    assert sorted(c.label for c in old_only) == [
        "tests/a/test_x.py::test_twin", "tests/b/test_x.py::test_twin", "tests/core/test_gone.py::test_removed"]
    assert sorted(c.label for c in new_only) == [
        "tests/appliance/a/test_x.py::test_twin", "tests/appliance/b/test_x.py::test_twin",
        "tests/appliance/sources/test_init.py::test_open[v4l2-1280x720]"]


def test_the_report_sums_only_tests_that_ran_in_both_and_counts_outcomes(runs):
    out = subprocess.run([sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True,
                         text=True, check=True).stdout
    # Matched and ran in both: 2.0+1.0+3.0+4.0 = 10.0 old, 2.5+1.5+3.0+6.0 = 13.0 new.
    assert "Their summed time: old 10.0 s, new 13.0 s, new/old 1.300." in out
    # test_same_name in test_one.py failed in the new run: 2.0+1.0+4.0 old, 2.5+1.5+6.0 new.
    assert "the 3 that passed in both" in out and "old 7.0 s, new 10.0 s, new/old 1.429." in out
    assert "| tests | 8 (7 passed, 1 skipped) | 8 (7 passed, 1 failed) |" in out
    assert "| pytest's total time | 20 s | 130 s |" in out
    assert "test_same_name passed -> failed" in out and "test_boots skipped -> passed" in out
    assert "| tests/appliance/test_two.py | 1 | 4.0 | 6.0 | +2.0 |" in out  # matched, by file
    assert "| tests/appliance/sources/test_init.py | 1 | 2.0 | 2.5 | +0.5 |" in out
    assert "## Only in the new run: 3 tests, 11 s" in out
    assert "| tests/appliance/sources/test_init.py | 1 | 9.0 |" in out
    assert "- tests/core/test_gone.py::test_removed (5.0 s, passed)" in out
