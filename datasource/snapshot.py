"""A one-shot snapshot of a source: load everything into a store, then counts as plain JSON data.

Shared by `hubtop snapshot` and the tests. The JSON object:

    {"total": 12,
     "states": {"pending": 1, "succeeded": 8, "failed": 3, "aborted": 0},   # + "queued", "running" when known
     "resubmitted": 0,
     "unassigned": {"pending": 0, ...},          # tasks with no engine, per state
     "engines": [{"id": 0, "uuid": "…", "alive": true, "total": 6, "pending": 1, "succeeded": 4, ...}],
     "warnings": ["…"],
     "source": {"kind": "hub", "backend": "sqlite", "name": "Hub tcp://127.0.0.1:39219 …"}}

`pending` counts every unfinished task (queued and running included), as the dashboard's pending pane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from humanize import intcomma

from .model import State
from .sources.base import Capabilities, Source
from .store import Filter, TaskStore

__all__ = ["load_source", "Loaded", "build_snapshot", "summary_text", "STATES"]

STATES = ("pending", "succeeded", "failed", "aborted")
_SPLIT = ("queued", "running")


@dataclass
class Loaded:
    store: TaskStore
    caps: Capabilities
    warnings: list[str] = field(default_factory=list)  # standing caveats + what the load reported


def load_source(source: Source, store: TaskStore | None = None, *, opened: bool = False, whole: bool = True) -> Loaded:
    """Open `source` (unless `opened`) and apply one full sync to a store. SourceError propagates.

    `whole`: every record complete when this returns. A HubSource on a SQLite Hub otherwise lists the
    tasks first and fills in their times over the next polls (`fast_load`: right for a dashboard,
    wrong for a one-shot `query` or export); counts alone (`snapshot`) do not need them."""
    inner = getattr(source, "inner", source)  # ReadOnlySource wraps the real one
    if hasattr(inner, "fast_load"):
        inner.fast_load = not whole
    if not opened:
        source.open()
    store = store if store is not None else TaskStore()
    warnings: list[str] = []
    for delta in source.sync():
        store.apply(delta)
        warnings.extend(w for w in delta.warnings if w not in warnings)
    caps = source.capabilities()
    standing = [w for w in caps.warnings if w not in warnings]
    return Loaded(store, caps, standing + warnings)


def _state_counts(per_state: dict[str, int], knows_running: bool) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    if knows_running:
        out.update({s: 0 for s in _SPLIT})
    for state, n in per_state.items():
        if state in (State.QUEUED.value, State.RUNNING.value, State.PENDING.value):
            out["pending"] += n
            if knows_running:  # as the dashboard's panes: queued = every pending task not known to run
                out["running" if state == State.RUNNING.value else "queued"] += n
        else:
            out[state] = out.get(state, 0) + n
    return out


def build_snapshot(
    store: TaskStore,
    caps: Capabilities,
    name: str,
    warnings: list[str] | tuple[str, ...] = (),
    where: Filter | None = None,
) -> dict[str, Any]:
    counts = store.counts(where)
    per_state = {s: counts.get(s, 0) for s in (x.value for x in State)}
    # store.counts folds queued/running into pending; undo that to count each task once
    per_state["pending"] = counts.get("pending", 0) - counts.get("queued", 0) - counts.get("running", 0)
    by_engine = store.engine_counts(where)
    engines = []
    for e in store.engines():
        states = _state_counts(by_engine.get(e.uuid, {}), caps.knows_running)
        engines.append({"id": e.id, "uuid": e.uuid, "alive": e.alive, "total": sum(by_engine.get(e.uuid, {}).values()),
                        **states})
    return {
        "total": counts.get("all", 0),
        "states": _state_counts(per_state, caps.knows_running),
        "resubmitted": counts.get("resubmitted", 0),
        "unassigned": _state_counts(by_engine.get(None, {}), caps.knows_running),
        "engines": engines,
        "warnings": list(warnings),
        "source": {"kind": caps.kind, "backend": caps.backend, "name": name},
    }


def summary_text(snap: dict[str, Any]) -> str:
    """A few human lines for `hubtop snapshot` without --json."""
    src = snap["source"]
    states = snap["states"]
    lines = [f"{src['name']} ({src['kind']}, {src['backend']} backend)"]
    parts = [f"{intcomma(states[s])} {s}" for s in STATES]
    if "running" in states:
        parts[0] += f" ({intcomma(states['queued'])} queued, {intcomma(states['running'])} running)"
    lines.append(f"{intcomma(snap['total'])} tasks: " + ", ".join(parts) + f"; {intcomma(snap['resubmitted'])} resubmitted")
    alive = [e for e in snap["engines"] if e["alive"]]
    lines.append(f"{len(alive)} engines alive" + (f", {len(snap['engines']) - len(alive)} gone" if len(alive) < len(snap["engines"]) else ""))
    for e in snap["engines"]:
        ident = f"engine {e['id']}" if e["id"] is not None else f"engine {e['uuid'][:8]}"
        lines.append(f"  {ident:<10} {'alive' if e['alive'] else 'gone ':<5}  {intcomma(e['total']):>7} tasks: "
                     + ", ".join(f"{intcomma(e[s])} {s}" for s in STATES if e[s]))
    lines.extend(f"warning: {w}" for w in snap["warnings"])
    return "\n".join(lines)
