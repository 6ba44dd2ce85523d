"""The pane tabs: Pending (or Queued and Running), Succeeded, Failed, Aborted, Resubmitted, All, with live counts."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static, Tab, Tabs

from .. import format as fmt

__all__ = ["PANE_TITLES", "panes_for", "PaneTabs"]

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


def panes_for(knows_running: bool) -> list[str]:
    first = ["queued", "running"] if knows_running else ["pending"]
    return first + ["succeeded", "failed", "aborted", "resubmitted", "all"]


class PaneTabs(Tabs, can_focus=False):
    """Tabs whose labels carry counts; digits select them (bound on the app)."""

    DEFAULT_CSS = """
    PaneTabs { height: 2; }
    PaneTabs Tab.-failures { color: $error; }
    PaneTabs Tab.-failures.-active { color: $error; text-style: bold; }
    """

    def __init__(self, panes: list[str], *, active: str | None = None, id: str | None = None) -> None:
        tabs = [Tab(self.label_for(i, pane, None), id=f"pane-{pane}") for i, pane in enumerate(panes)]
        super().__init__(*tabs, active=f"pane-{active}" if active else None, id=id)
        self.panes = panes
        self._labels: dict[str, str] = {}

    @staticmethod
    def label_for(index: int, pane: str, count: int | None) -> str:
        text = f"{index + 1} {PANE_TITLES[pane]}"
        return text if count is None else f"{text} {fmt.thousands(count)}"

    def set_panes(self, panes: list[str]) -> None:
        """Switch the tab set in place (Pending <-> Queued + Running), keeping the other tabs."""
        old = self.panes
        first_kept = next((p for p in old if p in panes), None)
        for pane in panes:
            if pane not in old:
                tab = Tab(self.label_for(panes.index(pane), pane, None), id=f"pane-{pane}")
                if first_kept is not None:
                    self.add_tab(tab, before=f"pane-{first_kept}")
                else:
                    self.add_tab(tab)
        for pane in old:
            if pane not in panes:
                self.remove_tab(f"pane-{pane}")
        self.panes = list(panes)
        self._labels.clear()

    def set_counts(self, counts: dict[str, int]) -> None:
        for i, pane in enumerate(self.panes):
            label = self.label_for(i, pane, counts.get(pane, 0))
            if self._labels.get(pane) == label:
                continue
            tab = self.get_tab(f"pane-{pane}")
            if tab is None:
                continue
            old = self._labels.get(pane)
            self._labels[pane] = label
            if old is not None and len(old) == len(label):
                # Same width (a count moved within its digits, every poll of a busy cluster): repaint the
                # tab alone. Setting `label` (Tab.update) re-lays out the whole screen (Static.update's default), a
                # reflow + full repaint per poll. Textual 8.2's Tab keeps its label in `_label`.
                tab._label = Content.from_text(label)
                Static.update(tab, tab._label, layout=False)  # no Relabelled: the underline stays put
            else:
                tab.label = label
            if pane == "failed":
                tab.set_class(counts.get(pane, 0) > 0, "-failures")
