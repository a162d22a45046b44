"""The VM tests' shared run preparation (tests/support/vm/vmlib.fresh_run_dir, uvc_run.prepare_run):
a run folder is cleared only where VM runs live, and the guest gets exactly the values it was given."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.support.vm import uvc_run, vmlib


@pytest.fixture
def runs():
    """A runs folder of this test's own, directly in the VM cache, removed afterwards."""
    path = vmlib.CACHE / f"test-runs-{uuid.uuid4().hex[:8]}"
    yield path
    if path.exists():
        for run in path.iterdir():
            for item in run.iterdir():
                item.unlink()
            run.rmdir()
        path.rmdir()


def test_a_fresh_run_folder_is_empty_and_the_earlier_runs_are_gone(runs):
    earlier = runs / "20000101-000000"
    earlier.mkdir(parents=True)
    (earlier / "console.log").write_text("an earlier run")
    run_dir = vmlib.fresh_run_dir(runs)
    assert run_dir.parent == runs and run_dir.is_dir()
    assert list(run_dir.iterdir()) == []
    assert list(runs.iterdir()) == [run_dir]


def test_a_folder_outside_the_vm_cache_is_refused_and_left_alone(tmp_path):
    keep = tmp_path / "runs" / "20000101-000000"
    keep.mkdir(parents=True)
    (keep / "console.log").write_text("not ours to clear")
    with pytest.raises(vmlib.VmError, match="refusing to clear"):
        vmlib.fresh_run_dir(tmp_path / "runs")
    assert (keep / "console.log").read_text() == "not ours to clear"
    nested = vmlib.CACHE / "runs" / "deeper"  # in the cache, but not directly: refused too
    with pytest.raises(vmlib.VmError, match="refusing to clear"):
        vmlib.fresh_run_dir(nested)


def test_the_guest_script_exports_each_value_exactly_as_given(runs):
    values = {"BLURCAM_VM_STEPS": "a,b", "BLURCAM_VM_ODD": "it's $HOME `x` \"y\""}
    script = uvc_run.prepare_run(runs, values) / "guest.sh"
    lines = script.read_text().splitlines()
    assert lines[-1].startswith("exec ") and lines[-1].endswith('uvc_guest.py "$1"')
    exports = "\n".join(line for line in lines if line.startswith("export "))
    for name, value in values.items():
        shown = subprocess.run(["sh", "-c", f'{exports}\nprintf %s "${name}"'],
                               capture_output=True, text=True, check=True).stdout
        assert shown == value
