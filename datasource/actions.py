"""Resubmit and purge: a preview first (what will be sent, what is left out and why), then the action.

Rules from the Hub spec (§7, §8, §11.7): the Hub accepts resubmitting a pending task (it then runs
twice: warn); it refuses a whole purge request if one id is pending (never send them); chunks of at
most 500 ids. Pending status comes from the store. Ids the store does not know are left out: the Hub
refuses a resubmit that names an unknown id, and purging one does nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from humanize import intcomma

from .model import State
from .sources.base import Capabilities, Source, SourceError
from .store import Filter, TaskStore, combine, engine_filter

__all__ = [
    "ACTIONS",
    "Preview",
    "ActionResult",
    "preview",
    "execute",
    "count_tasks",
    "ids_matching",
    "completed_ids",
    "failed_ids",
    "engine_completed_ids",
    "COMPLETED",
    "scope_cursor",
    "scope_marked",
    "scope_matching",
    "scope_engine",
]

ACTIONS = ("resubmit", "purge")
COMPLETED: Filter = (
    "state IN (?, ?, ?)",
    (State.SUCCEEDED.value, State.FAILED.value, State.ABORTED.value),
)
_PAST = {"resubmit": "resubmitted", "purge": "purged"}
_PENDING_RE = re.compile(r"msg pending: '([^']+)'")
_MAX_PENDING_RETRIES = 20  # per chunk: a task found pending by the Hub is dropped and the chunk re-sent


def count_tasks(n: int, what: str = "task") -> str:
    """'1 task', '1,200 tasks'."""
    return f"{intcomma(n)} {what}{'' if n == 1 else 's'}"


@dataclass
class Preview:
    action: str  # "resubmit" | "purge"
    scope: str  # human: "the task under the cursor", "3 marked tasks", "142 tasks matching state:failed"
    requested: int  # ids asked for
    send: list[str]  # ids that will actually be sent (purge: pending removed)
    pending: list[str]  # pending ids among the requested
    engines: list[str]  # engines touched, human ("0", "3", "no engine")
    warnings: list[str]
    allowed: bool
    reason: str  # why not allowed
    unknown: list[str] = field(default_factory=list)  # requested ids the store does not hold (left out)
    via: str = ""  # how it is done: "the Hub", "the database directly"

    def summary(self) -> str:
        """Multi-line text for the confirmation dialog and the CLI dry run."""
        verb = self.action.capitalize()
        lines = [f"{verb} {self.scope}" if self.scope else verb]
        if self.send:
            where = ""
            if self.engines:
                label = "engine" if len(self.engines) == 1 else "engines"
                where = f" on {label} {', '.join(self.engines)}"
            lines.append(f"  sends {count_tasks(len(self.send))}{where}" + (f" through {self.via}" if self.via else ""))
        if self.requested != len(self.send):
            lines.append(f"  ({intcomma(self.requested)} requested, {intcomma(self.requested - len(self.send))} left out)")
        lines.extend(f"  ! {w}" for w in self.warnings)
        if not self.allowed:
            lines.append(f"  not possible: {self.reason}")
        return "\n".join(lines)


@dataclass
class ActionResult:
    action: str
    sent: int
    ok: bool
    message: str  # one line for a notification
    resubmitted: dict[str, str] = field(default_factory=dict)  # old -> new (resubmit)


def _engine_label(engine_id: int | None, engine_uuid: str | None) -> str:
    if engine_id is not None:
        return str(engine_id)
    return f"{engine_uuid[:8]}…" if engine_uuid else "no engine"


def _engine_sort(label: str) -> tuple[int, int, str]:
    if label.isdigit():
        return (0, int(label), label)
    return (2 if label == "no engine" else 1, 0, label)


def preview(
    action: str,
    msg_ids: Sequence[str],
    store: TaskStore,
    caps: Capabilities,
    *,
    scope: str = "",
    read_only: bool = False,
) -> Preview:
    """What `execute` would do with these ids; nothing is sent."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    ids = list(dict.fromkeys(m for m in msg_ids if m))
    records = store.action_rows(ids) if ids else {}
    known = [m for m in ids if m in records]
    unknown = [m for m in ids if m not in records]
    pending_states = {State.PENDING, State.QUEUED, State.RUNNING}
    pending = [m for m in known if records[m].state in pending_states]
    warnings: list[str] = []
    if action == "purge":
        send = [m for m in known if records[m].state not in pending_states]
        if pending:
            warnings.append(
                f"{count_tasks(len(pending), 'pending task')} {'is' if len(pending) == 1 else 'are'} left out: "
                "the Hub refuses to purge pending tasks"
            )
    else:
        send = known
        if pending:
            warnings.append(
                f"{count_tasks(len(pending))} {'is' if len(pending) == 1 else 'are'} still pending: "
                "resubmitting runs them twice"
            )
        again = sum(1 for m in known if records[m].resubmitted)
        if again:
            warnings.append(f"{count_tasks(again)} {'was' if again == 1 else 'were'} already resubmitted: another copy runs")
        direct = sum(1 for m in known if records[m].queue == "mux")
        if direct:
            warnings.append(
                f"{count_tasks(direct, 'direct (mux) task')} lose{'s' if direct == 1 else ''} {'its' if direct == 1 else 'their'} "
                "engine: the Hub resubmits through the load-balanced scheduler"
            )
    if unknown:
        warnings.append(f"{count_tasks(len(unknown), 'id')} unknown to hubtop {'is' if len(unknown) == 1 else 'are'} left out")
    engines = sorted(
        {_engine_label(records[m].engine_id, records[m].engine_uuid) for m in send}, key=_engine_sort
    )

    can = caps.can_resubmit if action == "resubmit" else caps.can_purge
    via = ""
    if can:
        via = "the database directly" if action == "purge" and not caps.purge_via_hub else "the Hub"
        if via == "the database directly":
            warnings.append("the records are deleted from the database file itself, not through the Hub")
    reason = ""
    if read_only or caps.read_only:
        reason = "read-only mode"
    elif not can:
        why = caps.resubmit_reason if action == "resubmit" else caps.purge_reason
        reason = why or f"this source cannot {action}"
    elif not send:
        if not ids:
            reason = "no tasks selected"
        elif pending and action == "purge" and len(pending) == len(known):
            reason = "nothing to send: every selected task is pending"
        else:
            reason = "nothing to send: none of the selected tasks is known"
    return Preview(
        action=action,
        scope=scope or count_tasks(len(ids)),
        requested=len(ids),
        send=send,
        pending=pending,
        engines=engines,
        warnings=warnings,
        allowed=not reason,
        reason=reason,
        unknown=unknown,
        via=via,
    )


def execute(p: Preview, source: Source, *, chunk: int = 500, store: TaskStore | None = None) -> ActionResult:
    """Send the previewed action in chunks. Never raises for a refusal: ok=False and a one-line message.

    With `store`, ids that turned pending since the preview are dropped from a purge once more.
    """
    verb = _PAST[p.action]
    if not p.allowed:
        return ActionResult(p.action, 0, False, f"{p.action} refused: {p.reason}")
    ids = list(p.send)
    if p.action == "purge" and store is not None:
        pending_now = {r.msg_id for r in store.get_many(ids) if r.state.is_pending}
        ids = [m for m in ids if m not in pending_now]
    total = len(ids)
    if not ids:
        return ActionResult(p.action, 0, False, f"{p.action}: nothing to send")
    done = 0
    skipped: list[str] = []
    mapping: dict[str, str] = {}
    try:
        for start in range(0, total, max(1, chunk)):
            part = ids[start : start + chunk]
            if p.action == "resubmit":
                mapping.update(source.resubmit(part))
                done += len(part)
            else:
                done += _purge_chunk(source, part, skipped)
    except SourceError as exc:
        error = " ".join(str(exc).split())
        if done:
            message = f"{verb} {intcomma(done)} of {count_tasks(total)}, then: {error}"
        else:
            message = f"{p.action} failed: {error}"
        return ActionResult(p.action, done, False, message, mapping)
    message = f"{verb} {count_tasks(done)}"
    if skipped:
        message += f" ({count_tasks(len(skipped), 'pending task')} left out: the Hub still had them pending)"
    return ActionResult(p.action, done, True, message, mapping)


def _purge_chunk(source: Source, part: list[str], skipped: list[str]) -> int:
    """Purge one chunk; when the Hub names a pending id (a race with the preview), drop it and retry."""
    part = list(part)
    for _ in range(_MAX_PENDING_RETRIES):
        try:
            source.purge(part)
            return len(part)
        except SourceError as exc:
            m = _PENDING_RE.search(str(exc))
            if not m or m.group(1) not in part:
                raise
            part.remove(m.group(1))
            skipped.append(m.group(1))
            if not part:
                return 0
    source.purge(part)
    return len(part)


# -- ids for common scopes (store queries) ---------------------------------------------------------


def ids_matching(store: TaskStore, where: Filter | None = None, *, limit: int | None = None) -> list[str]:
    """Every task under a filter (e.g. a compiled query), oldest first."""
    return store.ids(where, limit=limit)


def completed_ids(store: TaskStore, where: Filter | None = None) -> list[str]:
    """Completed tasks (succeeded, failed, aborted) under a filter: what purge can take."""
    return store.ids(combine(where, COMPLETED))


def failed_ids(store: TaskStore, where: Filter | None = None, *, latest_only: bool = True) -> list[str]:
    """Failed tasks under a filter; by default without those already resubmitted (their retry is the latest)."""
    failed = combine(where, ("state = ?", (State.FAILED.value,)))
    if latest_only:
        failed = combine(failed, ("resubmitted IS NULL", ()))
    return store.ids(failed)


def engine_completed_ids(store: TaskStore, engine_uuid: str | None, where: Filter | None = None) -> list[str]:
    """One engine's completed tasks (None: tasks with no engine, e.g. scheduler failures)."""
    return store.ids(combine(where, engine_filter([engine_uuid]), COMPLETED))


# -- scope words, the same in the TUI and the CLI ----------------------------------------------------


def scope_cursor() -> str:
    return "the task under the cursor"


def scope_marked(n: int) -> str:
    return f"{count_tasks(n, 'marked task')}"


def scope_matching(n: int, query: str) -> str:
    return f"{count_tasks(n)} matching {query}" if query else count_tasks(n)


def scope_engine(n: int, engine: str) -> str:
    """engine: its human label ("3", "no engine")."""
    where = "with no engine" if engine == "no engine" else f"of engine {engine}"
    return f"{count_tasks(n, 'completed task')} {where}"
