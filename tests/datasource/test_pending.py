"""PendingScan: which pending tasks a source without a Hub re-reads at a sync (datasource/sources/pending.py)."""

from __future__ import annotations

import math

import pytest

from datasource.sources import pending
from datasource.sources.pending import PendingScan

from . import dbfixtures as fx


def test_few_pending_tasks_are_all_reread(monkeypatch):
    fx.small_pending_scan(monkeypatch, front=3, rotating=2)
    scan = PendingScan()
    order = list(range(10))
    alive = {1, 4, 5, 8, 9}.__contains__
    assert scan.pick(order, 5, alive) == ([1, 4, 5, 8, 9], [])


def test_the_front_is_the_oldest_and_the_rotation_reaches_every_task_in_turn(monkeypatch):
    fx.small_pending_scan(monkeypatch, front=3, rotating=4)
    scan = PendingScan()
    order = list(range(100))
    pending_now = set(range(0, 100, 3))  # every third key is still pending: the others are stale entries
    front_keys = sorted(pending_now)[:3]
    others = sorted(pending_now)[3:]
    picks = math.ceil(len(others) / 4)
    seen: list[int] = []
    for _ in range(picks):
        front, rest = scan.pick(order, len(pending_now), pending_now.__contains__)
        assert front == front_keys
        assert len(rest) == 4 and all(k in pending_now for k in rest)
        seen += rest
    assert seen[:len(others)] == others  # one turn reads each of the others once, in order
    assert seen[len(others):] == others[:len(seen) - len(others)]  # the last pick wraps around to the start


def test_the_rotation_skips_tasks_that_finished_and_resumes_after_the_last_one_read(monkeypatch):
    fx.small_pending_scan(monkeypatch, front=1, rotating=2)
    scan = PendingScan()
    live = set(range(10))
    assert scan.pick(range(10), len(live), live.__contains__) == ([0], [1, 2])
    live -= {3, 4}  # finished: stale in the order
    assert scan.pick(range(10), len(live), live.__contains__) == ([0], [5, 6])
    assert scan.pick(range(10), len(live), live.__contains__) == ([0], [7, 8])
    assert scan.pick(range(10), len(live), live.__contains__) == ([0], [9, 1])


def test_the_front_widens_with_the_changes_it_finds_and_narrows_when_calm():
    scan = PendingScan()
    assert scan.window == pending.FRONT_MIN
    scan.saw(10)  # a calm cluster: few completions
    assert scan.window == pending.FRONT_MIN
    scan.saw(pending.FRONT_MIN)  # the whole front had changed: more are likely just past it
    assert scan.window == 4 * pending.FRONT_MIN
    scan.saw(10 * pending.FRONT_MAX)
    assert scan.window == pending.FRONT_MAX
    scan.saw(0)
    assert scan.window == pending.FRONT_MIN


@pytest.mark.parametrize("count", [0, 1])
def test_an_empty_or_single_pending_set(count):
    scan = PendingScan()
    assert scan.pick(list(range(count)), count) == (list(range(count)), [])
