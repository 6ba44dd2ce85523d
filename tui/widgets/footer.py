"""Textual's Footer, re-composed only when the keys it shows change.

The stock Footer re-composes (~35 ms of UI thread on a slow machine: a dozen key widgets mounted and styled)
at every `bindings_updated` signal, and a screen sends several at start-up (focus set, screen stack,
callbacks after the first refresh) with the same keys each time: 5 of them before the first paint. This one
compares the keys it would show with the ones it shows and lets the signal through only when they differ.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer as _Footer

__all__ = ["Footer"]


class Footer(_Footer):
    _shown: tuple | None = None

    def _keys(self, screen: Screen) -> tuple:
        """What compose would show: each shown binding, with whether it is enabled and its tooltip."""
        return tuple(
            (binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
            for (_, binding, enabled, tooltip) in screen.active_bindings.values()
            if binding.show
        )

    def bindings_changed(self, screen: Screen) -> None:
        if screen.app.app_focus and self.is_attached and screen is self.screen:  # when the stock one re-composes
            keys = self._keys(screen)
            if keys == self._shown:
                return
            self._shown = keys
        super().bindings_changed(screen)
