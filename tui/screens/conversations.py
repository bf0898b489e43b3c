"""Saved conversations: pick one to resume (enter), export it (e) or delete it (d)."""
from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from mlxspec.tui.store import ConversationStore


def describe(conv) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.updated))
    turns = sum(1 for m in conv.messages if m.role == "user")
    plural = "turn" if turns == 1 else "turns"
    return f"{when}  {conv.title or conv.auto_title()}  ({turns} {plural}, {conv.model or 'default'})"


class ConversationsScreen(ModalScreen):
    """Dismisses with ("resume", id) or None."""
    BINDINGS = [
        Binding("escape", "dismiss_none", "Close"),
        Binding("e", "export", "Export Markdown"),
        Binding("d", "delete", "Delete"),
    ]

    def __init__(self, store: ConversationStore):
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Saved conversations — enter: resume · e: export Markdown · d: delete · esc: close")
            yield OptionList(id="convs")
            yield Static("", id="info", markup=False)

    def on_mount(self) -> None:
        self.refresh_list()

    def refresh_list(self) -> None:
        ol = self.query_one(OptionList)
        ol.clear_options()
        convs = self.store.list()
        ol.add_options([Option(describe(c), id=c.id) for c in convs])
        if convs:
            ol.highlighted = 0  # enter resumes the newest straight away
        else:
            self.query_one("#info", Static).update("No saved conversations yet.")
        ol.focus()

    def _selected(self):
        ol = self.query_one(OptionList)
        if ol.highlighted is None:
            return None
        return ol.get_option_at_index(ol.highlighted).id

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(("resume", event.option.id))

    def action_export(self) -> None:
        cid = self._selected()
        if cid:
            path = self.store.export_markdown(self.store.load(cid))
            self.query_one("#info", Static).update(f"Exported to {path}")

    def action_delete(self) -> None:
        cid = self._selected()
        if cid:
            self.store.delete(cid)
            self.refresh_list()
            self.query_one("#info", Static).update(f"Deleted {cid}")

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
