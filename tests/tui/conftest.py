"""Fixtures for the TUI tests: the app over tests/fakes.py FakeSource and a real TaskStore, deterministic.

`autopoll=False`: tests drive polls with `await app.poll_once()`; the monotonic clock and the wall clock
are injected (FakeClock, NOW), so ages, backoff and "3 min ago" never depend on the machine.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import pytest

import datasource.query  # noqa: F401  # imported before tests/ is on sys.path, so tests/datasource cannot shadow it

sys.path.append(str(Path(__file__).resolve().parents[1]))  # `import fakes` (appended: tests/datasource must not shadow datasource)

from fakes import T0, FakeSource  # noqa: E402

from tui.app import HubtopApp, make_app  # noqa: E402

SIZE = (140, 40)
NOW = T0 + timedelta(hours=1)  # an hour after the first fake task was submitted


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(autouse=True)
def _no_animations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_test_app(clock: FakeClock) -> Callable[..., tuple[HubtopApp, FakeSource]]:
    """Factory: `app, source = make_test_app(n=200, **make_app kwargs)` (autopoll off, clocks injected)."""

    def make(n: int = 200, source: FakeSource | None = None, **kwargs) -> tuple[HubtopApp, FakeSource]:
        src = source if source is not None else FakeSource(n)
        kwargs.setdefault("autopoll", False)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("now", lambda: NOW)
        return make_app(src, **kwargs), src

    return make


def now() -> datetime:
    return NOW


@pytest.fixture
def painted_lines(monkeypatch) -> Callable[[type], list[int]]:
    """painted_lines(WidgetClass): from now on, the y of every line that class renders, in order."""

    def count(cls: type) -> list[int]:
        painted: list[int] = []
        render_line = cls.render_line

        def counting(self, y: int):
            painted.append(y)
            return render_line(self, y)

        monkeypatch.setattr(cls, "render_line", counting)
        return painted

    return count
