from __future__ import annotations

import sys
import threading

import pytest

from datasource.priority import BACKGROUND_NICE, background_executor, lower_this_thread, thread_nice

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def _in_thread(fn):
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


@linux
def test_lowers_only_the_calling_thread() -> None:
    before = thread_nice()
    assert before is not None
    lowered, after_in_thread = _in_thread(lambda: (lower_this_thread(), thread_nice()))
    assert lowered == after_in_thread == min(19, before + BACKGROUND_NICE)
    assert thread_nice() == before  # this thread, and so the process's other threads, keep theirs


@linux
def test_never_below_the_lowest_priority() -> None:
    assert _in_thread(lambda: (lower_this_thread(by=30), lower_this_thread(), thread_nice())) == (19, 19, 19)


@linux
def test_background_executor_runs_work_lowered_on_one_reused_thread() -> None:
    pool = background_executor("hubtop-test")
    try:
        first = pool.submit(lambda: (threading.get_native_id(), thread_nice(), threading.current_thread().name)).result()
        second = pool.submit(threading.get_native_id).result()
    finally:
        pool.shutdown()
    tid, nice, name = first
    assert nice == min(19, thread_nice() + BACKGROUND_NICE)
    assert second == tid and tid != threading.get_native_id()
    assert name.startswith("hubtop-test")


def test_refused_change_is_reported_not_raised(monkeypatch) -> None:
    import os

    if thread_nice() is None:
        assert lower_this_thread() is None
        return

    def refuse(*_args) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    assert lower_this_thread() is None
