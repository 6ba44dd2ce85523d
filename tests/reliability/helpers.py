"""Shared helpers of the fault-injection tests (real faults, real clusters, real files)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable

from datasource.poller import Poller, PollOutcome
from datasource.store import TaskStore


def state_of(store: TaskStore) -> list[tuple]:
    return sorted((r.msg_id, r.state.value, r.engine_uuid, r.completed, r.ename) for r in store.page(limit=1_000_000))


def poll_until(poller: Poller, done: Callable[[PollOutcome], bool], timeout: float, interval: float = 0.3,
               outcomes: list[PollOutcome] | None = None) -> PollOutcome:
    """Step like the app does (waiting next_delay between polls, capped) until done(outcome) or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        out = poller.step()
        if outcomes is not None:
            outcomes.append(out)
        if done(out):
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout} s; last status: {out.status}")
        time.sleep(min(poller.next_delay(interval), interval))


def copy_connection_file(src: Path, dst: Path, **changes: object) -> Path:
    cfg = json.loads(src.read_text())
    cfg.update(changes)
    dst.write_text(json.dumps(cfg))
    dst.chmod(0o600)
    return dst


def errors_logged(caplog) -> list[logging.LogRecord]:
    """Log records that carry an exception or are errors: what "an exception escaped" looks like."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
