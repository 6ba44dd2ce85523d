"""What every task source is: the protocol, its capabilities, the deltas it yields, its errors.

This module is the one place that says what a source can do (`Capabilities`): views and actions ask
the source's capabilities, never its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

from ..model import Engine, QueueStatus, TaskDetail, TaskRecord

__all__ = [
    "Capabilities",
    "Delta",
    "Source",
    "SourceError",
    "SourceUnavailable",
    "NotATaskDatabase",
    "ActionRefused",
]


class SourceError(Exception):
    """A problem a person can act on. `str(err)` is one clear line, never a traceback."""


class SourceUnavailable(SourceError):
    """The source did not answer (Hub down, wrong key, Mongo down, file locked): retry later."""


class NotATaskDatabase(SourceError):
    """The path/URL exists but holds no ipyparallel task records (a foreign or corrupt file)."""


class ActionRefused(SourceError):
    """The Hub or the source refused an action (pending ids in a purge, unknown ids, NoDB...)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a source can do. Each `*_reason` says why not, in words for the status line."""

    kind: str  # "hub" | "sqlite" | "mongodb" | "replay" | "fake"
    backend: str = "unknown"  # the Hub's DB: "sqlite" | "dictdb" | "mongodb" | "nodb" | "unknown"
    stores_tasks: bool = True
    knows_running: bool = False  # can split pending into queued / running
    has_engines: bool = False  # live engine list (alive/dead) and queue counts
    can_resubmit: bool = False
    resubmit_reason: str = ""
    can_purge: bool = False
    purge_reason: str = ""
    purge_via_hub: bool = False  # False with can_purge: deletes from the database directly (allow_writes)
    read_only: bool = False
    warnings: tuple[str, ...] = ()  # standing caveats: DictDB culls history, NoDB stores nothing, ...


@dataclass(slots=True)
class Delta:
    """What changed since the previous delta. Sources yield these; the store applies them.

    `reset=True` means: the upserts of this sync (across all its deltas) are the whole truth;
    anything the store holds that was not upserted since the reset began is gone. It is used by a
    first load and by a full resynchronisation.
    """

    upserts: list[TaskRecord] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # msg_ids no longer in the source
    engines: list[Engine] | None = None  # None: unchanged / unknown this time
    queue: QueueStatus | None = None
    reset: bool = False  # first delta of a full (re)load
    done: int = 0  # progress of a (re)load: records delivered so far
    total: int | None = None  # ... out of (None when unknown)
    loading: bool = False  # more deltas of the same load follow
    warnings: list[str] = field(default_factory=list)  # events of this poll ("3 records vanished")
    running: set[str] | None = None  # msg_ids known running right now (IOPub), when knows_running
    counts: dict[str, int] | None = None  # a (re)load's tasks per pane, known before its rows (SQL aggregate)
    # A load's second phase: these upserts only fill in fields of records already delivered (the times of a
    # two-phase Hub load), not changes of the tasks; (done, total) of that fill.
    filling: tuple[int, int] | None = None


@runtime_checkable
class Source(Protocol):
    """A task source. Blocking calls, each bounded by a timeout; used from one worker thread at a time.

    Life cycle: `open()` (may raise SourceError), then `sync()` repeatedly (the first sync is a
    full load, in chunks, the next ones are deltas), `detail()` on demand, `close()`.
    """

    name: str  # human description: "Hub tcp://127.0.0.1:39219 (profile 'default')"

    def capabilities(self) -> Capabilities: ...

    def open(self) -> None: ...

    def sync(self) -> Iterator[Delta]: ...

    def detail(self, msg_id: str) -> TaskDetail: ...

    def resubmit(self, msg_ids: list[str]) -> dict[str, str]:
        """Resubmit through the Hub; returns {old msg_id: new msg_id}. Raises ActionRefused."""
        ...

    def purge(self, msg_ids: list[str]) -> int:
        """Delete these (completed) records; returns how many were asked. Raises ActionRefused."""
        ...

    def close(self) -> None: ...
