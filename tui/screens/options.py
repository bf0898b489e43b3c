"""Options: model, drafter, sampling and system prompt. Dismisses with new ChatSettings."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from mlxspec.tui.settings import ChatSettings

DRAFT_CHOICES = [
    ("auto (the suggested draft model, else a trained head)", "auto"),
    ("none (plain decoding)", "none"),
    ("draft head", "head"),
    ("draft model", "model"),
]
ADAPT_CHOICES = [("on when a head drafts", "default"), ("on", "on"), ("off (frozen head)", "off")]
_ADAPT = {"default": None, "on": True, "off": False}
VERIFY_LABELS = [
    ("exact (lossless: the target's own output)", "exact"),
    ("relaxed (blend with the draft: faster, bounded, reported)", "relaxed"),
    ("early-exit", "early-exit"),
]


class OptionsScreen(ModalScreen):
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, settings: ChatSettings):
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        s = self.settings
        with VerticalScroll():
            yield Static("Options", classes="title")
            with Grid():
                yield Label("Model")
                yield Input(s.model or "", placeholder="default: smollm2-135m-instruct",
                            id="model", compact=True)
                yield Label("Drafter", id="draft-label")
                yield Select(DRAFT_CHOICES, value=s.draft_method, allow_blank=False, id="draft",
                             compact=True)
                yield Label("Draft model")
                yield Input(s.draft_model, placeholder="name/folder (drafter = draft model)",
                            id="draft_model", compact=True)
                yield Label("Temperature")
                yield Input(f"{s.temp:g}", id="temp", type="number", compact=True)
                yield Label("Top-p")
                yield Input(f"{s.top_p:g}", id="top_p", type="number", compact=True)
                yield Label("Max tokens")
                yield Input(str(s.max_tokens), id="max_tokens", type="integer", compact=True)
                yield Label("Head adapts")
                yield Select(ADAPT_CHOICES, value={None: "default", True: "on", False: "off"}[s.adapt],
                             allow_blank=False, id="adapt", compact=True)
                yield Label("Idle training")
                yield Input(f"{s.idle_adapt_s:g}", placeholder="seconds after each reply (0 = none)",
                            id="idle_adapt_s", type="number", compact=True)
                yield Label("Verification")
                yield Select(VERIFY_LABELS, value=s.verify, allow_blank=False, id="verify", compact=True)
                yield Label("Relax weight")
                yield Input("" if s.relax_weight is None else f"{s.relax_weight:g}", placeholder="0-1 (default 0.5)",
                            id="relax_weight", type="number", compact=True)
                yield Label("Relax budget")
                yield Input("" if s.relax_budget is None else f"{s.relax_budget:g}",
                            placeholder="max TV per token (default 0.3)", id="relax_budget", type="number",
                            compact=True)
            yield Label("System prompt", classes="system-label")
            yield TextArea(s.system, id="system", compact=True)
            yield Static("", id="error")
            with Horizontal():
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save", variant="primary", id="save", compact=True)

    def read(self) -> ChatSettings:
        """The form as settings; ValueError with a readable message when it is not valid."""
        val = lambda wid: self.query_one(f"#{wid}", Input).value.strip()  # noqa: E731
        method = self.query_one("#draft", Select).value
        draft = val("draft_model") if method == "model" else method
        if method == "model" and not draft:
            raise ValueError("type a draft model name, or pick another drafter")
        try:
            temp, top_p = float(val("temp")), float(val("top_p"))
        except ValueError:
            raise ValueError("temperature and top-p must be numbers") from None
        try:
            max_tokens = int(val("max_tokens"))
        except ValueError:
            raise ValueError("max tokens must be a whole number") from None
        try:
            idle_s = float(val("idle_adapt_s")) if val("idle_adapt_s") else self.settings.idle_adapt_s
        except ValueError:
            raise ValueError("idle training must be a number of seconds") from None
        try:
            relax = [float(val(w)) if val(w) else None for w in ("relax_weight", "relax_budget")]
        except ValueError:
            raise ValueError("relax weight and budget must be numbers") from None
        new = self.settings.with_(
            model=val("model") or None, draft=draft, temp=temp, top_p=top_p,
            max_tokens=max_tokens, system=self.query_one("#system", TextArea).text,
            verify=self.query_one("#verify", Select).value, relax_weight=relax[0], relax_budget=relax[1],
            adapt=_ADAPT[self.query_one("#adapt", Select).value], idle_adapt_s=idle_s,
        )
        problem = new.validate()
        if problem:
            raise ValueError(problem)
        return new

    def action_save(self) -> None:
        try:
            self.dismiss(self.read())
        except ValueError as exc:
            self.query_one("#error", Static).update(f"⚠ {exc}")

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "save" else self.action_cancel()
