"""Help: the key bindings and what the status bar means."""
from __future__ import annotations

from rich.table import Table
from rich import box
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("enter", "send the message"),
    ("escape", "stop the reply (the partial reply is kept)"),
    ("ctrl+t", "colour tokens: draft (green) vs target (blue)"),
    ("ctrl+o", "options: model, drafter, temperature, top-p, max tokens, system prompt"),
    ("ctrl+r", "saved conversations: resume, export, delete"),
    ("ctrl+n", "new conversation"),
    ("ctrl+e", "export this conversation as Markdown"),
    ("f1", "this help"),
    ("ctrl+q", "quit (conversations are saved after every reply)"),
]

STATUS = (
    "Status bar: tokens/s of the reply · share of drafted tokens the target accepted · "
    "mean accepted length (tokens per target forward) · drafter vocabulary size · speedup "
    "against plain decoding measured on this machine during this session. With a head that "
    "adapts: its acceptance over the last replies (head acc, oldest to newest), and "
    "\"adapting…\" while it trains between replies (a new message stops that at once)."
)


def key_table() -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, show_edge=False)
    table.add_column("Key", style="bold", no_wrap=True)
    table.add_column("Action")
    for key, action in KEYS:
        table.add_row(key, action)
    return table


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("mlxspec chat — keys", classes="title")
            yield Static(key_table())
            yield Static(STATUS, classes="note")
            yield Static("esc to close", classes="note")
