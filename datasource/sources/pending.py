"""Which known pending tasks a source re-reads at a sync when no Hub tells it which ones are in flight.

A task database has no "changed since" mark, so a source that reads it directly (SQLite, MongoDB) only sees
a pending task finish by reading it again. Reading every pending row at every sync does not scale (the 1M
benchmark history holds 100k of them; a SQLite row re-read costs ~3.5 us after the Hub's commit has emptied the
page cache), so each changed sync re-reads two slices (`PendingScan.pick`):

* the front: the oldest `window` pending tasks. Tasks finish roughly in submission order, so this is where
  nearly every change is. The window follows what it finds (`PendingScan.saw`): four times the tasks that had
  changed in it, between FRONT_MIN and FRONT_MAX. A calm cluster costs FRONT_MIN rows a sync; a burst of
  completions that fills the window makes the next one four times larger, and is caught up in a sync or two.
* ROTATING of the others, taking turns, so every pending task is re-read: a change out of submission order
  is seen within ceil(pending / ROTATING) changed syncs.

Up to `window + ROTATING` pending tasks, all of them are re-read.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Sequence, TypeVar

__all__ = ["FRONT_MIN", "FRONT_MAX", "ROTATING", "IN_FLIGHT_MAX", "PendingScan"]

FRONT_MIN = 250
FRONT_MAX = 2_000
ROTATING = 500
IN_FLIGHT_MAX = 2_000  # paired with a Hub: in-flight ids re-read per sync (and as many that just left it)

K = TypeVar("K")


def _always(key: Any) -> bool:
    return True


class PendingScan:
    """The front window and the rotation's place, for one set of pending tasks (one table, one collection)."""

    def __init__(self) -> None:
        self.window = FRONT_MIN
        self._after: Any = None  # the last key the rotation read

    def pick(self, order: Sequence[K], count: int, alive: Callable[[K], bool] = _always) -> tuple[list[K], list[K]]:
        """(the front, the rotating slice) of the pending keys.

        `order`: the keys ascending, oldest first; it may hold keys no longer pending, for which `alive` is
        false. `count`: how many are pending."""
        if count <= self.window + ROTATING:
            return [k for k in order if alive(k)], []
        front: list[K] = []
        i = 0
        while len(front) < self.window:  # count > window: this ends
            if alive(order[i]):
                front.append(order[i])
            i += 1
        first = i
        start = first if self._after is None else max(first, bisect.bisect_right(order, self._after))
        picked: list[K] = []
        for lo, hi in ((start, len(order)), (first, start)):  # from where the last turn stopped, wrapping
            for j in range(lo, hi):
                if alive(order[j]):
                    picked.append(order[j])
                    if len(picked) == ROTATING:
                        break
            if len(picked) == ROTATING:
                break
        self._after = picked[-1] if picked else None
        return front, picked

    def saw(self, changed: int) -> None:
        """How many tasks of the front had changed: the next front is four times that, within bounds."""
        self.window = min(FRONT_MAX, max(FRONT_MIN, 4 * changed))
