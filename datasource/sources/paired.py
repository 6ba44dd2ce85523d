"""What a database source (SQLite file, MongoDB) gets from being paired with a Hub (`--hub`).

Engines, queue counts and the ids in flight come from the Hub; resubmitting always goes through it.
Shared by `SQLiteSource` and `MongoSource`.
"""

from __future__ import annotations

from typing import Any

from ..model import QueueStatus
from .base import ActionRefused, Delta, SourceError

VERBOSE_LIMIT = 20_000  # a verbose queue_request lists every completed msg_id: above this, don't ask
RESUBMIT_REASON = "resubmit needs the Hub: pass --hub CONNECTION_FILE"
PURGE_REASON = "purging needs the Hub (--hub CONNECTION_FILE) or write access (allow_writes) to a tasks.db no Hub is using"


def resubmit_via(hub: Any, msg_ids: list[str]) -> dict[str, str]:
    """Resubmit through the paired Hub ({old: new}); without one, refuse with the reason."""
    if hub is None:
        raise ActionRefused(RESUBMIT_REASON)
    return hub.resubmit(list(msg_ids))


def learn_engine_ids(hub: Any, engine_ids: dict[str, int]) -> None:
    """uuid -> id of the paired Hub's live engines into `engine_ids` (best effort: a Hub down is not fatal)."""
    try:
        engine_ids.update({uuid: eid for eid, uuid in hub.connection_request().items()})
    except SourceError:
        pass


def hub_state(hub: Any, delta: Delta, engine_ids: dict[str, int]) -> set[str] | None:
    """Engines and queue counts from a paired Hub into `delta`, uuid -> id into `engine_ids`.

    Returns the msg_ids the Hub has in flight (queued or running), or None when they are not known: the
    Hub did not answer (then a warning), or naming them would cost too much — a verbose `queue_request`
    also lists every msg_id completed since the Hub started, so above VERBOSE_LIMIT completed tasks the
    caller falls back to re-reading pending rows in slices.
    """
    try:
        live = hub.connection_request()
        engine_ids.update({uuid: eid for eid, uuid in live.items()})
        status: QueueStatus = hub.queue_status(live=live)
        delta.engines = list(status.engines.values())
        delta.queue = status
        in_flight = status.unassigned + sum(e.queue + e.tasks for e in status.engines.values())
        if in_flight == 0:
            return set()
        if sum(e.completed for e in status.engines.values()) + in_flight > VERBOSE_LIMIT:
            return None
        raw = hub.request("queue_request", {"targets": None, "verbose": True})
    except SourceError as exc:
        delta.warnings.append(f"Hub did not answer ({exc}); showing the database only")
        return None
    ids: set[str] = set()
    for key, value in raw.items():
        if key == "unassigned" and isinstance(value, list):
            ids.update(str(m) for m in value)
        elif isinstance(value, dict):
            for k in ("queue", "tasks"):
                if isinstance(value.get(k), list):
                    ids.update(str(m) for m in value[k])
    return ids
