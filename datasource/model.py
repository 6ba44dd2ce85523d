"""The normalized task model: what every source turns a Hub TaskRecord into.

All the normalization rules of the Hub spec live here, in one place:
dates arrive as ISO strings ('...Z' or '...+00:00'), as naive or aware datetimes (Mongo), or not at all;
`error` / `execute_result` are JSON *strings* on SQLite and dicts elsewhere; `engine_uuid == ""`
means "no engine" (scheduler-generated failures); any field may be None (ipyparallel#937);
tracebacks carry ANSI colour codes; pre-9.1 schemas have no `label`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Mapping

__all__ = [
    "State",
    "TaskRecord",
    "TaskDetail",
    "Engine",
    "QueueStatus",
    "LIGHT_KEYS",
    "DETAIL_KEYS",
    "parse_time",
    "to_epoch",
    "from_epoch",
    "strip_ansi",
    "normalize_record",
    "normalize_detail",
    "is_resubmitted_copy",
]


class State(str, Enum):
    """Where a task is. `pending` is split into `queued`/`running` only when a source can tell."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def is_pending(self) -> bool:
        return self in (State.PENDING, State.QUEUED, State.RUNNING)

    @property
    def is_done(self) -> bool:
        return not self.is_pending


# Keys a source asks the Hub/DB for to build a TaskRecord (never buffers, never header/content).
LIGHT_KEYS: tuple[str, ...] = (
    "msg_id",
    "submitted",
    "client_uuid",
    "engine_uuid",
    "started",
    "completed",
    "resubmitted",
    "received",
    "result_content",
    "queue",
    "label",
)
# Keys for one task's detail view (still never the pickled buffers).
DETAIL_KEYS: tuple[str, ...] = LIGHT_KEYS + (
    "header",
    "metadata",
    "content",
    "result_header",
    "result_metadata",
    "execute_input",
    "execute_result",
    "error",
    "stdout",
    "stderr",
)

_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (IPython-formatted tracebacks are coloured)."""
    return _ANSI_RE.sub("", text)


def parse_time(value: Any) -> datetime | None:
    """Any date the Hub, SQLite or Mongo hands us -> an aware UTC datetime, or None.

    Accepts datetimes (naive ones are taken as UTC, as orjson and pymongo do), ISO-8601 strings with
    'Z', '+00:00' or other offsets, with or without microseconds, with ' ' or 'T' between date and
    time, and epoch numbers. Anything unparseable becomes None rather than an exception.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, (str, bytes)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        text = text.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            # Python 3.10's fromisoformat only takes 0, 3 or 6 fractional digits: pad/trim them.
            m = re.match(r"^(.*?[T ]\d{2}:\d{2}:\d{2})\.(\d+)(.*)$", text)
            if not m:
                return None
            frac = (m.group(2) + "000000")[:6]
            try:
                dt = datetime.fromisoformat(f"{m.group(1)}.{frac}{m.group(3)}")
            except ValueError:
                return None
    else:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def to_epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def from_epoch(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def _as_dict(value: Any) -> dict | None:
    """`error`, `execute_result` (SQLite: JSON strings) and dict columns -> dict or None."""
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (str, bytes)):
        try:
            decoded = json.loads(value)
        except (ValueError, TypeError):
            return None
        return decoded if isinstance(decoded, dict) else None
    return None


def _utf8(text: str) -> str:
    """Lone surrogates (JSON "\\udce9", e.g. a surrogate-escaped file name in an evalue) cannot be encoded as
    UTF-8: SQLite, the terminal and every export would raise on them. Replace them with '?'."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        value = str(value)
    return _utf8(value) or None


def _as_text(value: Any) -> str:
    """stdout/stderr: '' by default, tolerate None and bytes (non-UTF-8 is replaced, not fatal)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return _utf8(value if isinstance(value, str) else str(value))


def is_resubmitted_copy(msg_id: str, header: Mapping | None) -> bool:
    """A Hub-made resubmission carries the Hub's session prefix in its msg_id, not the client's."""
    if not header or not isinstance(header, Mapping):
        return False
    session = header.get("session")
    return bool(session) and not msg_id.startswith(f"{session}_")


@dataclass(slots=True)
class Engine:
    """One engine as the Hub knows it (uuid is the stable key; ids restart at 0 with each Hub)."""

    uuid: str
    id: int | None = None
    alive: bool = False
    queue: int = 0  # DirectView requests not yet answered (running + queued behind it)
    tasks: int = 0  # load-balanced tasks assigned and not completed
    completed: int = 0  # finished on this engine since the Hub started (Hub counter)

    def copy(self) -> "Engine":
        """A copy: 0.24 µs, where dataclasses.replace takes 1.3 µs. The store copies every engine it knows each time
        their counts move (a few hundred in a long-lived store: every poll of a busy cluster)."""
        return Engine(self.uuid, self.id, self.alive, self.queue, self.tasks, self.completed)


@dataclass(slots=True)
class QueueStatus:
    """The Hub's in-memory view of work in flight (from `queue_request`)."""

    engines: dict[int, Engine] = field(default_factory=dict)
    unassigned: int = 0

    @property
    def completed(self) -> int:
        """Tasks finished on these engines since the Hub started (the Hub's counters, summed)."""
        return sum(e.completed for e in self.engines.values())


@dataclass(slots=True)
class TaskRecord:
    """The light fields of one task: what lists, counts and filters need. Cheap to hold a million of."""

    msg_id: str
    state: State
    engine_uuid: str | None = None
    engine_id: int | None = None
    queue: str | None = None
    label: str | None = None
    client: str | None = None
    submitted: datetime | None = None
    started: datetime | None = None
    completed: datetime | None = None
    received: datetime | None = None
    ename: str | None = None
    evalue: str | None = None
    resubmitted: str | None = None  # the msg_id of the task that superseded this one
    stdout_size: int | None = None  # None: the source did not say
    stderr_size: int | None = None
    run: str | None = None  # which Hub run the record belongs to (SQLite table), None = the live one

    @property
    def duration(self) -> float | None:
        """Seconds between start and completion (engine clock, so both from one domain)."""
        if self.started is not None and self.completed is not None:
            return max(0.0, (self.completed - self.started).total_seconds())
        return None

    @property
    def is_resubmitted(self) -> bool:
        return self.resubmitted is not None


@dataclass(slots=True)
class TaskDetail:
    """Everything one task has, for the detail screen. Fetched on demand, never kept for all tasks."""

    record: TaskRecord
    stdout: str = ""
    stderr: str = ""
    traceback: list[str] = field(default_factory=list)  # with ANSI codes; strip or render as you need
    code: str | None = None  # execute_request code, or execute_input
    execute_result: dict | None = None
    result_content: dict | None = None
    metadata: dict | None = None
    result_metadata: dict | None = None
    header: dict | None = None
    result_header: dict | None = None
    msg_type: str | None = None
    resubmitted_from: str | None = None  # the original this one is a resubmission of (found by query)


def _state_of(completed: datetime | None, result_content: dict | None, error: dict | None) -> State:
    if completed is None:
        return State.PENDING
    status = (result_content or {}).get("status")
    if status == "ok":
        return State.SUCCEEDED
    if status == "aborted":
        return State.ABORTED
    if status == "error" or error is not None:
        return State.FAILED
    # Completed but no status at all (odd/partial record): call it failed only if it names an error.
    if (result_content or {}).get("ename"):
        return State.FAILED
    return State.SUCCEEDED


def _engine_id(rc: dict | None, engine_uuid: str | None, engine_ids: Mapping[str, int] | None) -> int | None:
    if engine_uuid and engine_ids and engine_uuid in engine_ids:
        return _size(engine_ids[engine_uuid])
    info = (rc or {}).get("engine_info")
    if isinstance(info, Mapping):
        return _size(info.get("engine_id"))
    return None


def normalize_record(
    raw: Mapping[str, Any],
    engine_ids: Mapping[str, int] | None = None,
    *,
    run: str | None = None,
) -> TaskRecord:
    """A raw TaskRecord dict (Hub reply, SQLite row as dict, Mongo document) -> TaskRecord.

    `engine_ids` maps engine uuid -> integer id (every uuid the source ever saw).
    Never raises for odd values: unknown keys are ignored, wrong types become None.
    """
    msg_id = _as_str(raw.get("msg_id")) or ""
    rc = _as_dict(raw.get("result_content"))
    error = _as_dict(raw.get("error"))
    completed = parse_time(raw.get("completed"))
    engine_uuid = _as_str(raw.get("engine_uuid"))  # "" -> None
    label = _as_str(raw.get("label"))
    if label is None:
        md = _as_dict(raw.get("metadata"))
        label = _as_str((md or {}).get("label"))
    ename = evalue = None
    state = _state_of(completed, rc, error)
    if state is State.FAILED:
        src = rc if (rc or {}).get("ename") else (error or rc or {})
        ename = _as_str(src.get("ename"))
        evalue = _as_str(src.get("evalue"))
        if evalue is not None:
            evalue = strip_ansi(evalue)
    stdout, stderr = raw.get("stdout"), raw.get("stderr")
    queue = _as_str(raw.get("queue"))
    return TaskRecord(
        msg_id=msg_id,
        state=state,
        engine_uuid=engine_uuid,
        engine_id=_engine_id(rc, engine_uuid, engine_ids),
        queue=queue if queue in ("mux", "task") else queue,
        label=label,
        client=_as_str(raw.get("client_uuid")),
        submitted=parse_time(raw.get("submitted")),
        started=parse_time(raw.get("started")),
        completed=completed,
        received=parse_time(raw.get("received")),
        ename=ename,
        evalue=evalue,
        resubmitted=_as_str(raw.get("resubmitted")),
        stdout_size=len(_as_text(stdout)) if "stdout" in raw else _size(raw.get("stdout_size")),
        stderr_size=len(_as_text(stderr)) if "stderr" in raw else _size(raw.get("stderr_size")),
        run=run,
    )


def _size(value: Any) -> int | None:
    """A count or an id: a non-negative int that fits SQLite's INTEGER (a bigger one overflows the store)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63 else None


def normalize_detail(
    raw: Mapping[str, Any],
    engine_ids: Mapping[str, int] | None = None,
    *,
    run: str | None = None,
    resubmitted_from: str | None = None,
) -> TaskDetail:
    """A full raw TaskRecord (DETAIL_KEYS) -> TaskDetail with the heavy fields."""
    record = normalize_record(raw, engine_ids, run=run)
    rc = _as_dict(raw.get("result_content"))
    error = _as_dict(raw.get("error"))
    tb_src = (rc or {}).get("traceback") or (error or {}).get("traceback") or []
    if isinstance(tb_src, str):
        tb_src = [tb_src]
    traceback = [_as_text(line) for line in tb_src] if isinstance(tb_src, list) else []
    content = _as_dict(raw.get("content"))
    header = _as_dict(raw.get("header"))
    code = _as_str(raw.get("execute_input")) or _as_str((content or {}).get("code"))
    return TaskDetail(
        record=record,
        stdout=_as_text(raw.get("stdout")),
        stderr=_as_text(raw.get("stderr")),
        traceback=traceback,
        code=code,
        execute_result=_as_dict(raw.get("execute_result")),
        result_content=rc,
        metadata=_as_dict(raw.get("metadata")),
        result_metadata=_as_dict(raw.get("result_metadata")),
        header=header,
        result_header=_as_dict(raw.get("result_header")),
        msg_type=_as_str((header or {}).get("msg_type")),
        resubmitted_from=resubmitted_from,
    )
