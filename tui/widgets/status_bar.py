"""The status line, in normal flow above the Footer: connection, poll interval, data age, totals, warnings.

The data's age shows only once it is older than the polling explains (FRESH_SLACK past the interval), when
polling is paused, or while the source does not answer: an age that flips "0 s" / "1 s" every second says
nothing, and repainted the line once or twice a second while a busy cluster was watched."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from textual.content import Content
from textual.widgets import Static

from .. import format as fmt

__all__ = ["StatusInfo", "StatusBar", "FRESH_SLACK"]

FRESH_SLACK = 2.0  # seconds past the poll interval before the data's age shows (a poll itself takes time)

_STATE_COLOUR = {
    "connected": "$success",
    "loading": "$warning",
    "connecting": "$warning",
    "retrying": "$error",
    "paused": "$warning",
}


@dataclass
class StatusInfo:
    state: str  # poller state: connecting | loading | connected | retrying | paused
    message: str
    interval: float  # seconds between polls, as they are now (spaced out while the cluster is busy)
    age: float | None  # seconds since the last successful poll
    total: int  # tasks in the store
    matching: int | None = None  # tasks matching the filter/engine selection (None: no filter)
    loading: tuple[int, int | None] | None = None  # (done, total) during a (re)load
    filling: tuple[int, int] | None = None  # (done, total) while a two-phase load fills in the tasks' times
    read_only: bool = False
    marked: int = 0
    warnings: list[str] = field(default_factory=list)
    busy_rate: float | None = None  # task changes a second while the polls are spaced out (PollStatus.busy_rate)


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar {
        width: 1fr;
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.info: StatusInfo | None = None
        self.text = ""
        self._shown: tuple[StatusInfo, str] | None = None

    def show(self, info: StatusInfo) -> None:
        shown = (replace(info, age=None), _shown_age(info))  # what the line shows, not the age's float
        if shown == self._shown:
            return  # called at every UI tick: most calls change nothing that shows
        self._shown = shown
        self.info = info
        content = self.render_info(info)
        self.text = content.plain
        self.update(content, layout=False)  # one line of a fixed size: repaint it, never re-lay out the screen

    @staticmethod
    def render_info(info: StatusInfo) -> Content:
        """Short facts first (state, age, totals), the long error text last: the line is cut on the right."""
        colour = _STATE_COLOUR.get(info.state, "$warning")
        detail = ""
        if info.state == "loading" and info.loading is not None:
            done, total = info.loading
            head = f"loading {fmt.thousands(done)}" + (f" / {fmt.thousands(total)}" if total else "")
        elif info.state == "retrying":
            error, _, retry = info.message.rpartition("; ")
            head = retry if retry.startswith("retrying") else "retrying"
            detail = error if retry.startswith("retrying") else info.message
        else:
            head, _, rest = info.message.partition(" · ")
            detail = rest
        parts: list[Content] = [Content.from_markup(f"[{colour}]●[/] [b]$head[/b]", head=head)]
        age = _shown_age(info)
        if age and info.state == "retrying":
            parts.append(Content.from_markup("[$error]stale: updated $age ago[/]", age=age))
        elif age and info.state == "paused":
            parts.append(Content.from_markup("[$text-muted]updated $age ago[/]", age=age))
        elif age:  # connected, yet older than the polling explains: a slow poll, a lagging source
            parts.append(Content.from_markup("[$warning]updated $age ago[/]", age=age))
        tasks = f"{fmt.thousands(info.total)} tasks"
        if info.matching is not None:
            tasks = f"{fmt.thousands(info.matching)} of {tasks} match"
        parts.append(Content(tasks))
        if info.filling is not None:
            done, total = info.filling
            parts.append(Content.from_markup("[$warning]times $done / $total[/]",
                                             done=fmt.thousands(done), total=fmt.thousands(total)))
        if info.marked:
            parts.append(Content.from_markup("[$accent]$n marked[/]", n=fmt.thousands(info.marked)))
        if info.busy_rate is not None:
            parts.append(Content.from_markup("[$warning]every $interval s: $rate changes/s[/]",
                                             interval=f"{info.interval:g}", rate=f"{float(f'{info.busy_rate:.2g}'):,.0f}"))
        else:
            parts.append(Content(f"every {info.interval:g} s"))
        if info.read_only:
            parts.append(Content.from_markup("[$warning]read-only[/]"))
        for w in info.warnings:
            parts.append(Content.from_markup("[$warning]▲ $w[/]", w=w))
        if detail:
            parts.append(Content.from_markup("[$text-muted]$detail[/]", detail=detail))
        return Content(" · ").join(parts)


def _shown_age(info: StatusInfo) -> str:
    """The data's age as the line shows it ("" while fresh: see the module docstring)."""
    if info.age is None:
        return ""
    fresh = info.state not in ("retrying", "paused") and info.age <= info.interval + FRESH_SLACK
    return "" if fresh else fmt.age_seconds(info.age)
