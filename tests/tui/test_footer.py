"""The Footer re-composes only when the keys it shows change (Textual's re-composes at every bindings signal)."""

from __future__ import annotations

from textual.widgets._footer import FooterKey

from tui.widgets.filter_bar import FilterBar
from tui.widgets.footer import Footer

from .conftest import SIZE


def shown(app) -> list[str]:
    return [f"{k.key}:{k.description}" for k in app.screen.query_one(Footer).query(FooterKey)]


async def test_the_footer_recomposes_only_when_its_keys_change(make_test_app, monkeypatch) -> None:
    recomposes: list[list[str]] = []
    recompose = Footer.recompose

    async def counting(self):
        await recompose(self)
        recomposes.append(shown(self.app))

    monkeypatch.setattr(Footer, "recompose", counting)
    app, _ = make_test_app()
    async with app.run_test(size=SIZE) as pilot:
        await app.poll_once()
        await pilot.pause()
        keys = shown(app)
        assert "slash:Filter" in keys and len(recomposes) <= 2  # the stock Footer: 5 at start-up
        before = len(recomposes)
        for _ in range(3):
            app.screen.refresh_bindings()  # what focus changes, screen pushes and dynamic actions send
        await pilot.pause()
        await pilot.pause()
        assert len(recomposes) == before and shown(app) == keys
        app.screen_main().query_one(FilterBar).query_one("Input").focus()  # other bindings in force
        await pilot.pause()
        await pilot.pause()
        assert len(recomposes) == before + 1 and shown(app) == recomposes[-1] != keys
