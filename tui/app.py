"""The chat app: log of turns, prompt, live status bar; engine work on the engine thread."""
from __future__ import annotations

from typing import Callable, Optional

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, Static
from textual.worker import get_current_worker

from mlxspec.tui.adapting import AdaptUpdate, trend_text
from mlxspec.tui.saved import SavedConversations
from mlxspec.tui.engine_thread import Chunk, Done, EngineThread, Prefill, describe_error
from mlxspec.tui.screens.help import HelpScreen
from mlxspec.tui.widgets.messages import (DRAFT_STYLE, TARGET_STYLE, AssistantMessage, Notice,
                                  UserMessage, merge_span)
from mlxspec.tui.screens.options import OptionsScreen
from mlxspec.tui.settings import ChatSettings
from mlxspec.tui.stats import reply_footer, reply_stats, status_line
from mlxspec.tui.store import Conversation, ConversationStore, Message

GENERATING = "generating… (esc to stop)"
LEGEND = ("  ■ draft", " ■ target")
WELCOME = "Type a message and press enter · esc stops a reply · ctrl+t shows draft tokens · f1 help"


class ChatApp(SavedConversations, App):
    TITLE = "mlxspec chat"
    ENABLE_COMMAND_PALETTE = False
    CSS_PATH = "chat.tcss"  # the styles of the app, its screens and widgets
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+t", "toggle_draft", "Draft colours", priority=True),
        Binding("ctrl+o", "options", "Options", priority=True),
        Binding("ctrl+r", "conversations", "Saved", priority=True),
        Binding("ctrl+n", "new_chat", "New", priority=True),
        Binding("ctrl+e", "export", "Export", priority=True),
        Binding("f1", "help", "Help", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, settings: Optional[ChatSettings] = None,
                 conversation: Optional[Conversation] = None,
                 store: Optional[ConversationStore] = None,
                 loader: Optional[Callable] = None):
        super().__init__()
        self.settings = settings or ChatSettings()
        self.store = store or ConversationStore()
        self.conv = conversation or Conversation(system=self.settings.system)
        if conversation is not None:
            self.settings = self.settings.with_(system=conversation.system)
        self._loader = loader
        self.engine_thread: Optional[EngineThread] = None
        self.model_name = self.settings.model or "default model"
        self.draft_name = "…"
        self.loading = False
        self.handle = None  # GenerationHandle of the reply being streamed
        self.current: Optional[AssistantMessage] = None
        self.live_stats: dict = {}
        self.state = ""
        self.adapt: tuple[str, str] = ("", "")  # (word, trend) of an adapting head

    # -- layout ----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield VerticalScroll(id="log")
        yield Input(placeholder="Message (enter to send)", id="prompt")
        yield Static("", id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#log").set_class(self.settings.show_draft, "-show-draft")
        self.engine_thread = EngineThread(self._loader, self._post_adapt)
        await self.render_conversation()
        self.query_one("#log", VerticalScroll).anchor()
        self.query_one("#prompt", Input).focus()
        self.load_engine()

    def on_unmount(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.engine_thread is not None:
            self.engine_thread.shutdown(timeout=2.0)

    async def render_conversation(self) -> None:
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        widgets = []
        for m in self.conv.messages:
            if m.role == "user":
                widgets.append(UserMessage(m.content))
            elif m.role == "assistant":
                widgets.append(AssistantMessage(m.content, m.spans, reply_footer(m.finish, m.stats)))
        if not widgets:
            widgets.append(Notice(WELCOME))
        await log.mount_all(widgets)
        log.scroll_end(animate=False)
        self.sub_title = self.conv.title or (self.conv.auto_title() if self.conv.messages else "")
        self.live_stats = dict(self.conv.messages[-1].stats) if self.conv.messages else {}
        self.update_status()

    def update_status(self) -> None:
        width = self.size.width - 2  # the bar's horizontal padding
        if self.settings.show_draft:
            width -= len("".join(LEGEND))
        line = Text(status_line(self.live_stats, self.model_name, self.draft_name, self.state, width,
                                self.adapt))
        if self.settings.show_draft:
            line.append(LEGEND[0], DRAFT_STYLE).append(LEGEND[1], TARGET_STYLE)
        self.query_one("#status", Static).update(line)

    def on_resize(self) -> None:
        if self.query("#status"):  # resizes come before the first compose too
            self.update_status()

    def _post_adapt(self, info, running: bool) -> None:
        self.post_message(AdaptUpdate(info, running))  # from the engine thread; thread-safe

    def on_adapt_update(self, msg: AdaptUpdate) -> None:
        self.adapt = trend_text(msg.info, msg.running)
        if self.query("#status"):  # an update may arrive while the app closes
            self.update_status()

    async def notice(self, text: str, error: bool = False) -> None:
        log = self.query_one("#log", VerticalScroll)
        await log.mount(Notice(text, error=error))
        log.scroll_end(animate=False)

    # -- engine loading --------------------------------------------------------------
    def load_engine(self) -> None:
        self.loading = True
        self.model_name = self.settings.model or "default model"
        self.draft_name = "…"
        self.state = "loading…"
        self.update_status()
        s = self.settings
        fut = self.engine_thread.load(s.model, s.draft, **s.load_options())
        self._await_load(fut)

    @work(thread=True, group="load")
    def _await_load(self, fut) -> None:
        # Waits off the UI thread; the engine thread itself never blocks on the UI.
        worker = get_current_worker()
        while True:
            try:
                (engine, warnings), err = fut.result(timeout=0.2), None
                break
            except TimeoutError:
                if worker.is_cancelled:
                    return
            except BaseException as exc:
                engine, warnings, err = None, [], describe_error(exc, "could not load the model")
                break
        try:
            self.call_from_thread(self._on_loaded, engine, warnings, err)
        except RuntimeError:
            pass  # the app is closing

    async def _on_loaded(self, engine, warnings: list, err: Optional[str]) -> None:
        self.loading = False
        self.state = ""
        for w in warnings:
            await self.notice(f"warning: {w}")
        if engine is None:
            self.model_name, self.draft_name = "no model", "none"
            await self.notice(f"⚠ {err}\nOpen Options (ctrl+o) to choose another model.", error=True)
        else:
            self.model_name, self.draft_name = engine.model_name, engine.draft_name
        self.update_status()

    # -- chatting ----------------------------------------------------------------------
    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.handle is not None:
            self.notify("A reply is still streaming; press esc to stop it.", severity="warning")
            return
        event.input.value = ""
        await self.send(text)

    async def send(self, text: str) -> None:
        log = self.query_one("#log", VerticalScroll)
        for n in log.query(Notice):
            if n.text == WELCOME:
                await n.remove()
        self.conv.messages.append(Message("user", text))
        self.save()
        self.current = AssistantMessage()
        await log.mount_all([UserMessage(text), self.current])
        self.current.start_stream()
        log.anchor()
        self.live_stats, self.state = {}, GENERATING
        self.update_status()
        s = self.settings
        self.handle = self.engine_thread.generate(
            self.conv.chat_messages(), temp=s.temp, top_p=s.top_p, max_tokens=s.max_tokens,
            idle_s=s.idle_adapt_s)
        self._relay(self.handle)

    @work(thread=True, group="relay")
    def _relay(self, handle) -> None:
        """Moves engine events to the UI in batches, so a slow screen only makes batches bigger."""
        worker = get_current_worker()
        while True:
            if worker.is_cancelled:
                handle.cancel()
            batch = handle.drain(timeout=0.1)
            if not batch:
                continue
            try:
                self.call_from_thread(self._apply_events, batch)
            except RuntimeError:
                handle.cancel()  # the app is closing
                return
            if isinstance(batch[-1], Done):
                return

    async def _apply_events(self, batch: list) -> None:
        msg = self.current
        text, spans, last, done, prefill = "", [], None, None, None
        for ev in batch:
            if isinstance(ev, Prefill):
                prefill = ev
            elif isinstance(ev, Chunk):
                merge_span(spans, ev.response.text, ev.response.from_draft)
                text += ev.response.text
                last = ev
            elif isinstance(ev, Done):
                done = ev
        if msg is not None and (text or spans):
            await msg.append(text, spans)
        if prefill is not None and last is None and self.handle is not None and self.state != "stopping…":
            self.state = f"prefill {prefill.done}/{prefill.total} · {prefill.rate:.0f} tok/s"
            self.update_status()
        if last is not None:
            if self.state.startswith("prefill"):
                self.state = GENERATING
            self.live_stats = reply_stats(last.response, last.plain_tps)
            self.update_status()
        if done is not None:
            await self._finish_reply(done)

    async def _finish_reply(self, done: Done) -> None:
        msg, self.current, self.handle = self.current, None, None
        self.state = ""
        content = msg.content if msg else ""
        footer = reply_footer(done.finish, self.live_stats)
        if msg is not None:
            await msg.finish(footer)
        if not content.strip() and done.finish in ("error", "stopped"):
            # Nothing came back: undo the turn and give the prompt back for a retry.
            if msg is not None:
                await msg.remove()
            user = self.conv.messages.pop() if self.conv.messages else None
            log = self.query_one("#log", VerticalScroll)
            if user is not None and log.children and isinstance(log.children[-1], UserMessage):
                await log.children[-1].remove()
            if user is not None:
                self.query_one("#prompt", Input).value = user.content
        else:
            self.conv.messages.append(
                Message("assistant", content, msg.spans if msg else [], self.live_stats, done.finish))
        if done.finish == "error":
            await self.notice(f"⚠ {done.error}", error=True)
        elif done.finish == "stopped" and not content.strip():
            await self.notice("Stopped before the first token; your message is back in the prompt.")
        self.save()
        self.sub_title = self.conv.title or (self.conv.auto_title() if self.conv.messages else "")
        self.update_status()

    # -- actions -------------------------------------------------------------------------
    def check_action(self, action: str, parameters) -> bool | None:
        if isinstance(self.screen, ModalScreen) and action not in ("quit",):
            return False  # the main screen's keys are off while a dialog is open
        if action == "stop":
            return self.handle is not None
        return True

    def action_stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.state = "stopping…"
            self.update_status()

    def action_toggle_draft(self) -> None:
        self.settings = self.settings.with_(show_draft=not self.settings.show_draft)
        self.query_one("#log").set_class(self.settings.show_draft, "-show-draft")
        self.update_status()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_options(self) -> None:
        self.push_screen(OptionsScreen(self.settings), self._options_done)

    async def _options_done(self, new: Optional[ChatSettings]) -> None:
        if new is None:
            return
        reload = new.engine_key() != self.settings.engine_key()
        self.settings = new
        if reload:
            if self.handle is not None:
                self.handle.cancel()  # the engine thread finishes the reply before reloading
            await self.notice(f"Loading {new.model or 'the default model'} (drafter: {new.draft})…")
            self.load_engine()
        self.update_status()
