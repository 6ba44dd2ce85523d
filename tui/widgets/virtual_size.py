"""Setting a scrolling widget's virtual size without re-laying out the screen when no scrollbar comes or goes."""

from __future__ import annotations

from textual.geometry import Size
from textual.scroll_view import ScrollView

__all__ = ["set_virtual_size"]


def set_virtual_size(widget: ScrollView, size: Size, *, repaint: bool = True) -> None:
    """Assigning `virtual_size` re-lays out the whole screen (the reactive has layout=True). Rows that come and
    go every poll of a busy cluster change only the scroll range while the widget scrolls before and after
    (its scrollbar is shown), or fits before and after (none is), or always shows its scrollbar
    (`overflow-y: scroll`): then the range and the scrollbar are updated in place and the widget repainted
    (Widget._scroll_update, Textual 8.2), unless `repaint` is False: the caller repaints what changed."""
    old = widget.virtual_size
    if size == old:
        return
    height = widget.size.height
    scrolls = min(size.height, old.height) > height and widget.show_vertical_scrollbar
    fits = max(size.height, old.height) <= height and not widget.show_vertical_scrollbar
    always = widget.styles.overflow_y == "scroll"  # the scrollbar is there whatever the size
    if size.width == old.width and (scrolls or fits or always):
        widget.set_reactive(type(widget).virtual_size, size)
        widget._scroll_update(size)
        if repaint:
            widget.refresh()
        return
    widget.virtual_size = size
