"""hubtop's background work yields the CPU to the cluster it watches.

The poll (reading the task database or the Hub, folding the changes into the store) runs on a thread of its
own whose CPU priority is lowered once, when it starts (a "nice" value 10 above the process's own). When the
machine has a spare moment, the thread runs as before; when the Hub, its schedulers and the engines want
every core, they go first and the poll waits for a gap. Its weight is still a tenth of a normal thread's,
so a poll is delayed, never starved (a 20 ms store write takes at most ~0.2 s on a saturated core), and the
UI thread, which may wait for the store's lock, is never stuck behind it for long. The UI thread keeps the
normal priority: keystrokes stay as quick as the machine allows.

Linux sets the nice value per thread (`setpriority` on the thread id); elsewhere this does nothing. An
unprivileged process cannot raise a priority again, which is why the poll has a thread of its own instead of
borrowing one from a shared pool.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BACKGROUND_NICE", "lower_this_thread", "thread_nice", "background_executor"]

log = logging.getLogger("hubtop")

BACKGROUND_NICE = 10  # added to the process's nice value (19 at most)
_MAX_NICE = 19


def thread_nice() -> int | None:
    """The calling thread's nice value (None where threads have none of their own)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return None


def lower_this_thread(by: int = BACKGROUND_NICE) -> int | None:
    """Lower the calling thread's CPU priority by `by` nice steps; returns the new nice value, or None when
    it could not be changed (not Linux, or a sandbox that forbids it: the work then runs at normal priority)."""
    current = thread_nice()
    if current is None:
        return None
    wanted = min(_MAX_NICE, current + by)
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), wanted)
    except OSError as exc:
        log.info("background thread keeps its priority: %s", exc)
        return None
    return wanted


def background_executor(name: str) -> ThreadPoolExecutor:
    """One long-lived thread at background priority, for work submitted one piece at a time (the polls)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name, initializer=lower_this_thread)
