"""What the two UVC VM runs (tests/appliance/uvc/test_uvc_in_vm.py, test_controls_in_vm.py) prepare
alike before booting: our dummy_hcd_iso built for the kernel the VM boots, a fresh run folder, the
guest script that runs uvc_guest.py there; and how their tests judge a recorded step.

A failing module build fails the test that needs it; it never skips it (a skip would hide a
kernel the patch no longer applies to)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.vm import vmlib
from tests.support.vm.dummy_hcd_iso import build as iso_module


def iso_module_or_fail(suite: str = vmlib.SUITE) -> Path:
    """dummy_hcd_iso.ko for the kernel of `suite` the VM boots (built once, cached); a failed
    build fails the calling test with the build's own error."""
    vmlinuz, _, release = vmlib.prepare_kernel(suite)
    try:
        return iso_module.build(release, vmlib.debian_version(vmlinuz, suite), suite=suite)
    except vmlib.VmError as exc:
        pytest.fail(f"building the test module dummy_hcd_iso for {release} failed:\n{exc}")


def prepare_run(runs: Path, guest_env: Mapping[str, str]) -> Path:
    """A fresh run folder in `runs` (earlier runs removed) holding guest.sh, which runs
    uvc_guest.py in this checkout with `guest_env` exported (step selection, counts)."""
    run_dir = vmlib.fresh_run_dir(runs)
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in guest_env.items())
    (run_dir / "guest.sh").write_text(f'#!/bin/sh\ncd {vmlib.REPO}\n{exports}'
                                      f'exec {sys.executable} {vmlib.HERE / "uvc_guest.py"} "$1"\n')
    return run_dir


def assert_step_ok(results: dict, step: str) -> None:
    """The guest ran `step` of uvc_guest.py and it raised nothing."""
    assert step in results["steps"], f"step {step} did not run; see {results['run_dir']}/guest.log"
    assert step not in results["errors"], f"step {step} failed in the VM:\n{results['errors'][step]}"
