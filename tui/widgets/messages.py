"""Chat log widgets: a user turn, an assistant reply (Markdown + token-origin view), a notice."""
from __future__ import annotations

from typing import Optional

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Markdown, Static

DRAFT_STYLE = "bold #7ee787"  # accepted draft tokens
TARGET_STYLE = "#79c0ff"  # tokens the target produced itself


def merge_span(spans: list, text: str, from_draft: bool) -> None:
    """Append text to the run-length list [[text, from_draft], ...]."""
    if not text:
        return
    if spans and spans[-1][1] == from_draft:
        spans[-1][0] += text
    else:
        spans.append([text, from_draft])


def spans_text(spans: list) -> Text:
    out = Text()
    for piece, from_draft in spans:
        out.append(piece, DRAFT_STYLE if from_draft else TARGET_STYLE)
    return out


class UserMessage(Static):
    def __init__(self, text: str):
        super().__init__(Text(text), markup=False)
        self.text = text


class Notice(Static):
    """Errors and info lines inside the chat log (never a traceback)."""

    def __init__(self, text: str, error: bool = False):
        super().__init__(Text(text), markup=False, classes="-error" if error else "")
        self.text = text


class AssistantMessage(Vertical):
    """Rendered as Markdown, or as coloured tokens when the draft view is on (CSS class
    on the app). Both views are kept current so toggling is instant."""

    def __init__(self, content: str = "", spans: Optional[list] = None, footer: str = ""):
        super().__init__()
        self.content = content
        self.spans = [list(s) for s in spans] if spans else ([[content, False]] if content else [])
        self._footer_text = footer
        self._stream = None

    def compose(self):
        yield Markdown(self.content)
        yield Static(spans_text(self.spans), classes="tokens")
        yield Static(self._footer_text, classes="footer", markup=False)

    def on_mount(self) -> None:
        self.query_one(".footer").display = bool(self._footer_text)

    def start_stream(self) -> None:
        self._stream = Markdown.get_stream(self.query_one(Markdown))

    async def append(self, text: str, spans: list) -> None:
        for piece, from_draft in spans:
            merge_span(self.spans, piece, from_draft)
        self.content += text
        if self._stream is not None and text:
            await self._stream.write(text)
        self.query_one(".tokens", Static).update(spans_text(self.spans))

    async def finish(self, footer: str = "") -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.set_footer(footer)

    def set_footer(self, footer: str) -> None:
        self._footer_text = footer
        f = self.query_one(".footer", Static)
        f.update(footer)
        f.display = bool(footer)
