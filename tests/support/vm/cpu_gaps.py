"""Runs inside the test VM: notes every stretch in which a CPU ran no guest code at all.

Pinned to one CPU at the highest real-time priority, this process sleeps a few milliseconds at a
time; nothing in the guest can keep it from running once its timer fires, so when it wakes much
later than it asked, that CPU (a QEMU vCPU thread) was not running: the emulator was descheduled
by the busy machine it runs on. A slow answer that falls inside such a gap is the emulator's, not
the daemon's. Writes one line per gap ("start end", CLOCK_MONOTONIC seconds) to OUT, flushed at
once; started with `python -S` so that it is up in a second even under TCG.

    python -S cpu_gaps.py CPU OUT
"""

from __future__ import annotations

import os
import sys
import time

SLEEP_S = 0.01
GAP_S = 0.04  # a wake-up this much later than asked counts as a gap


def main() -> None:
    cpu, out = int(sys.argv[1]), sys.argv[2]
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(os.sched_get_priority_max(os.SCHED_FIFO)))
    with open(out, "w", buffering=1) as f:
        f.write("ready\n")
        last = time.monotonic()
        while True:
            time.sleep(SLEEP_S)
            now = time.monotonic()
            if now - last > SLEEP_S + GAP_S:
                f.write(f"{last + SLEEP_S:.4f} {now:.4f}\n")
            last = now


if __name__ == "__main__":
    main()
