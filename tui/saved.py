"""The chat's saved-conversation actions: save after each turn, new chat, the saved list,
resume and export (a mixin of ChatApp; it uses the app's conv, store, settings, handle)."""
from __future__ import annotations

from mlxspec.tui.screens.conversations import ConversationsScreen
from mlxspec.tui.store import Conversation, Message


class SavedConversations:
    def save(self) -> None:
        if not self.conv.messages:
            return
        self.conv.model = self.model_name if self.model_name not in ("default model", "no model") \
            else (self.settings.model or "")
        self.conv.draft = self.draft_name if self.draft_name != "…" else self.settings.draft
        self.conv.system = self.settings.system
        try:
            self.store.save(self.conv)
        except OSError as exc:
            self.notify(f"Could not save the conversation: {exc}", severity="error")
        self.sub_title = self.conv.title or self.conv.auto_title()

    def _busy(self) -> bool:
        if self.handle is not None:
            self.notify("Stop the reply first (esc).", severity="warning")
            return True
        return False

    async def action_new_chat(self) -> None:
        if self._busy():
            return
        self.conv = Conversation(system=self.settings.system)
        await self.render_conversation()

    def action_conversations(self) -> None:
        if self._busy():
            return
        self.push_screen(ConversationsScreen(self.store), self._conversations_done)

    async def _conversations_done(self, result) -> None:
        if result and result[0] == "resume":
            await self.resume(result[1])

    async def resume(self, conv_id: str) -> None:
        try:
            self.conv = self.store.load(conv_id)
        except (KeyError, OSError, ValueError) as exc:
            await self.notice(f"⚠ could not open conversation: {exc}", error=True)
            return
        self.settings = self.settings.with_(system=self.conv.system)
        await self.render_conversation()
        if self.conv.model and self.conv.model not in (self.model_name, self.settings.model):
            await self.notice(f"This conversation was made with {self.conv.model}; "
                              f"continuing with {self.model_name} (ctrl+o to change).")

    def action_export(self) -> None:
        if not self.conv.messages:
            self.notify("Nothing to export yet.")
            return
        try:
            path = self.store.export_markdown(self.conv)
        except OSError as exc:
            self.notify(f"Export failed: {exc}", severity="error")
            return
        self.notify(f"Exported to {path}", timeout=6)

    async def action_quit(self) -> None:
        if self.handle is not None and self.current is not None:
            # Keep what was generated so far, marked as stopped, then leave.
            self.handle.cancel()
            if self.current.content.strip():
                self.conv.messages.append(Message("assistant", self.current.content,
                                                  self.current.spans, self.live_stats, "stopped"))
            self.save()
            self.handle = None
        self.exit()
