"""A child process that ends when the process that started it dies, even by SIGKILL.

`blurcam run --web` starts the settings page as a child process. If the daemon is killed, an
orphaned page would keep the port, and the next daemon's page could not start. The parent puts
its pid in the child's environment; the child asks the kernel for a signal when its parent dies
(PR_SET_PDEATHSIG) and, in case the parent died before that request, checks it is still there.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Mapping

PARENT_PID_ENV = "BLURCAM_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that must not outlive this process.

    Start the child from the thread that lives as long as the process (the main thread): the
    kernel signals the child when the thread that forked it ends.
    """
    env = dict(os.environ if environ is None else environ)
    env[PARENT_PID_ENV] = str(os.getpid())
    return env


def end_with_parent(environ: Mapping[str, str] | None = None) -> None:
    """In the child: be terminated (SIGTERM) when the parent named in the environment dies."""
    env = os.environ if environ is None else environ
    parent = env.get(PARENT_PID_ENV, "")
    if not parent.isdigit():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if os.getppid() != int(parent):  # the parent died before the request was in place
        os._exit(0)
