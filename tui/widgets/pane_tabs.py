"""The pane tabs: Pending (or Queued and Running), Succeeded, Failed, Aborted, Resubmitted, All, with live counts.

Every tab keeps its digit key and its count on screen: when the full labels do not fit the bar's width, the
labels take the first shorter form that does (see FORMS), recomputed on resize, when counts change and, for
the form that titles only the active tab, when the active tab changes.

Each change of a tab's width re-lays out the screen and repaints it from scratch (a frame after a layout costs
~4x an ordinary one), and a busy cluster's counts cross digit boundaries every few seconds: a burst takes
Queued from 0 to 1,494 and back. So the tabs of unfinished tasks (QUEUE_PANES) are as wide as their labels
would be with the largest count of the bar (All's) in them, or with as many digits as the bar has the room
for: a queue growing by digits then fits in its tab. And a tab whose count loses a digit keeps its width (a
minimum width) for HOLD_SECONDS after the bar last widened (a queue of 2,000 draining to 0 crosses three digit
boundaries in as many polls).
"""

from __future__ import annotations

import time
from typing import Callable

from rich.cells import cell_len
from textual.content import Content
from textual.widgets import Static, Tab, Tabs

from .. import format as fmt

__all__ = ["PANE_TITLES", "SHORT_TITLES", "FORMS", "panes_for", "compact_count", "tab_text", "PaneTabs"]

PANE_TITLES = {
    "pending": "Pending",
    "queued": "Queued",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "aborted": "Aborted",
    "resubmitted": "Resubmitted",
    "all": "All",
}

SHORT_TITLES = {
    "pending": "Pend",
    "queued": "Queue",
    "running": "Run",
    "succeeded": "Succ",
    "failed": "Fail",
    "aborted": "Abort",
    "resubmitted": "Resub",
    "all": "All",
}

# Widest first; the first one whose labels fit is shown.
#   full     "3 Succeeded 70,123"
#   short    "3 Succ 70,123"
#   active   "3 70,123", the active tab keeps its short title ("1 Queue 12")
#   counts   "3 70,123"
#   compact  "3 70.1k"
FORMS = ("full", "short", "active", "counts", "compact")
BOLD_KEY_FORMS = {"active", "counts", "compact"}  # a bold digit tells the key from the count beside it
QUEUE_PANES = {"pending", "queued", "running"}  # their counts rise and fall; the others' only grow (or reset)
HOLD_SECONDS = 30.0  # a narrowed tab keeps its width this long after the last widening


def panes_for(knows_running: bool) -> list[str]:
    first = ["queued", "running"] if knows_running else ["pending"]
    return first + ["succeeded", "failed", "aborted", "resubmitted", "all"]


def compact_count(n: int) -> str:
    """Three significant digits past a thousand: 950 -> '950', 70123 -> '70.1k', 1234567 -> '1.23M'."""
    if n < 1000:
        return str(n)
    value, unit = n / 1e3, "k"
    if value >= 999.5:  # would round to "1e+03k"
        value, unit = n / 1e6, "M"
    if value >= 999.5:
        value, unit = n / 1e9, "G"
    return f"{value:.3g}{unit}"


def tab_text(index: int, pane: str, count: int | None, form: str = "full", *, active: bool = False) -> str:
    """The label of tab `index` in one of FORMS (no count yet: the digit and a title)."""
    key = str(index + 1)
    if form == "full":
        title = PANE_TITLES[pane]
    elif form == "short" or (form == "active" and active) or count is None:
        title = SHORT_TITLES[pane]
    else:
        title = ""
    if count is None:
        return f"{key} {title}"
    number = compact_count(count) if form == "compact" else fmt.thousands(count)
    return f"{key} {title} {number}" if title else f"{key} {number}"


class PaneTabs(Tabs, can_focus=False):
    """Tabs whose labels carry counts; digits select them (bound on the app)."""

    DEFAULT_CSS = """
    PaneTabs { height: 2; }
    PaneTabs Tab.-failures { color: $error; }
    PaneTabs Tab.-failures.-active { color: $error; text-style: bold; }
    """

    def __init__(self, panes: list[str], *, active: str | None = None, id: str | None = None) -> None:
        tabs = [Tab(tab_text(i, pane, None), id=f"pane-{pane}") for i, pane in enumerate(panes)]
        super().__init__(*tabs, active=f"pane-{active}" if active else None, id=id)
        self.panes = panes
        self.form = "full"
        self.clock: Callable[[], float] = time.monotonic
        self._held: dict[str, int] = {}  # tab id -> the label width (cells) the tab is held at
        self._widened = 0.0  # clock time of the last widening
        self._release_timer = None
        self._counts: dict[str, int] = {}
        self._labels: dict[str, str] = {}  # the full label of each counted pane (benchmarks/probe.py reads it)
        # what each tab shows: (text, digit in bold)
        self._shown: dict[str, tuple[str, bool]] = {f"pane-{pane}": (tab_text(i, pane, None), False)
                                                    for i, pane in enumerate(panes)}

    @staticmethod
    def label_for(index: int, pane: str, count: int | None) -> str:
        """The full label ("3 Succeeded 70,123"), whatever form the bar shows."""
        return tab_text(index, pane, count)

    def set_panes(self, panes: list[str]) -> None:
        """Switch the tab set in place (Pending <-> Queued + Running), keeping the other tabs."""
        old = self.panes
        first_kept = next((p for p in old if p in panes), None)
        for pane in panes:
            if pane not in old:
                text = tab_text(panes.index(pane), pane, None, self.form)
                tab = Tab(text, id=f"pane-{pane}")
                self._shown[f"pane-{pane}"] = (text, False)
                if first_kept is not None:
                    self.add_tab(tab, before=f"pane-{first_kept}")
                else:
                    self.add_tab(tab)
        for pane in old:
            if pane not in panes:
                self.remove_tab(f"pane-{pane}")
                self._shown.pop(f"pane-{pane}", None)
                self._counts.pop(pane, None)
        self.panes = list(panes)
        self._labels.clear()
        self._relabel()  # the kept tabs' digits moved

    def set_counts(self, counts: dict[str, int], *, hold: bool = True) -> None:
        """New counts; `hold=False` (counts of another filter) lets go of the widths the tabs were held at."""
        self._counts = {pane: counts.get(pane, 0) for pane in self.panes}
        self._labels = {pane: self.label_for(i, pane, self._counts[pane]) for i, pane in enumerate(self.panes)}
        self._relabel(release=not hold)
        tab = self.get_tab("pane-failed")
        if tab is not None:
            tab.set_class(self._counts.get("failed", 0) > 0, "-failures")

    def watch_active(self, previously_active: str, active: str) -> None:
        super().watch_active(previously_active, active)
        self._relabel()  # the "active" form titles the active tab alone

    def on_resize(self) -> None:
        self._relabel()

    def _texts(self, form: str) -> dict[str, str]:
        return {f"pane-{pane}": tab_text(i, pane, self._counts.get(pane), form, active=self.active == f"pane-{pane}")
                for i, pane in enumerate(self.panes)}

    def _gutter(self) -> int:
        tab = self.get_tab(f"pane-{self.panes[-1]}") if self.size.width else None
        return tab.styles.gutter.width if tab is not None else 2  # Tab's `padding: 0 1`

    def _fit(self) -> tuple[str, dict[str, str]]:
        """The widest form whose labels fit the bar (the last one if none does; full before the first layout)."""
        width = self.size.width
        gutter = self._gutter()
        for form in FORMS:
            texts = self._texts(form)
            if not width or sum(cell_len(t) + gutter for t in texts.values()) <= width:
                break
        return form, texts

    def _release_when_due(self) -> None:
        self._release_timer = None
        due = self._widened + HOLD_SECONDS - self.clock()
        if due > 0:
            self._release_timer = self.set_timer(due, self._release_when_due)
        else:
            self._relabel(release=True)

    def _room(self, widths: dict[str, int], gutter: int) -> dict[str, int]:
        """`widths` (cells), with the tabs of unfinished tasks, whose counts rise and fall with the queue, widened
        to their labels with the bar's largest count in them (All's), or with the widest count below that for
        which the bar has the room."""
        width = self.size.width
        volatile = [(i, pane) for i, pane in enumerate(self.panes) if pane in QUEUE_PANES]
        if not self._counts or not width or not volatile:
            return widths
        top = max(self._counts.values())
        for count in [top] + [10 ** k - 1 for k in range(len(str(top)) - 1, 0, -1)]:
            room = dict(widths)
            for i, pane in volatile:
                tab_id = f"pane-{pane}"
                text = tab_text(i, pane, count, self.form, active=self.active == tab_id)
                room[tab_id] = max(widths[tab_id], cell_len(text))
            if sum(w + gutter for w in room.values()) <= width:
                return room
        return widths

    def _hold(self, texts: dict[str, str], release: bool) -> None:
        """Widths the tabs keep: the widest label each showed since the last release while all of them fit the
        bar, with room for the queue's growth (see _room)."""
        gutter = self._gutter()
        own = {tab_id: cell_len(text) for tab_id, text in texts.items()}
        held = own if release else {tab_id: max(w, self._held.get(tab_id, 0)) for tab_id, w in own.items()}
        if self.size.width and sum(w + gutter for w in held.values()) > self.size.width:
            held = own
        floor = self._room(own, gutter)  # what a release leads to
        held = self._room(held, gutter)
        if any(w > self._held.get(tab_id, 0) for tab_id, w in held.items()):
            self._widened = self.clock()
        for tab_id, w in held.items():
            tab = self.get_tab(tab_id)
            if tab is not None and self._held.get(tab_id) != w:
                tab.styles.min_width = w + gutter
        self._held = held
        if self._release_timer is None and held != floor and self.is_attached:
            self._release_timer = self.set_timer(HOLD_SECONDS, self._release_when_due)

    def _relabel(self, *, release: bool = False) -> None:
        old_form = self.form
        self.form, texts = self._fit()
        widths = dict(self._held)
        self._hold(texts, release or self.form != old_form)
        bold_key = self.form in BOLD_KEY_FORMS
        resized = False
        for tab_id, text in texts.items():
            old = self._shown.get(tab_id)
            if old == (text, bold_key) and widths.get(tab_id) == self._held.get(tab_id):
                continue
            tab = self.get_tab(tab_id)
            if tab is None:
                continue
            self._shown[tab_id] = (text, bold_key)
            key, _, rest = text.partition(" ")
            label = Content.assemble((key, "bold"), " ", rest) if bold_key else Content(text)
            # Setting `label` would post Relabelled, on which Tabs slides the underline for 0.3 s: ~20 repaints
            # of the whole screen (~60 ms of CPU) each time a count gains or loses a digit, which a busy
            # cluster's Pending count does every few seconds. Textual 8.2's Tab keeps its label in `_label`.
            tab._label = label
            if old is not None and widths.get(tab_id) == self._held.get(tab_id):
                # Same width (a count moved within its digits or under the held width, every poll of a busy
                # cluster): repaint the tab alone; a layout (Static.update's default) would reflow and repaint
                # the screen.
                Static.update(tab, label, layout=False)
            else:
                Static.update(tab, label)
                resized = True
        if resized:
            self._highlight_active(animate=False)  # the active tab may have moved: the underline follows at once
