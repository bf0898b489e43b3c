"""Saved conversations: one JSON file each under the user data dir, written atomically.

A save writes a temp file in the same folder, fsyncs it and os.replace()s it over the
old file, so a crash or kill leaves either the old or the new version, never a mix.
"""
from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

FORMAT_VERSION = 1


def data_dir() -> Path:
    env = os.environ.get("MLXSPEC_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("mlxspec"))


def new_id(now: Optional[float] = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass
class Message:
    role: str  # system | user | assistant
    content: str
    spans: list = field(default_factory=list)  # [[text, from_draft], ...] for assistant replies
    stats: dict = field(default_factory=dict)  # tokens/s, acceptance... of the reply
    finish: Optional[str] = None  # stop | length | stopped | error

    def to_json(self) -> dict:
        d = {"role": self.role, "content": self.content}
        if self.spans:
            d["spans"] = self.spans
        if self.stats:
            d["stats"] = self.stats
        if self.finish:
            d["finish"] = self.finish
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Message":
        return cls(d["role"], d.get("content", ""), d.get("spans") or [], d.get("stats") or {},
                   d.get("finish"))


@dataclass
class Conversation:
    id: str = field(default_factory=new_id)
    title: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    model: str = ""
    draft: str = ""
    system: str = ""
    messages: list = field(default_factory=list)  # list[Message], no system message

    def chat_messages(self) -> list[dict]:
        """What the chat template sees: optional system prompt, then the turns."""
        out = [{"role": "system", "content": self.system}] if self.system.strip() else []
        return out + [{"role": m.role, "content": m.content} for m in self.messages]

    def auto_title(self) -> str:
        for m in self.messages:
            if m.role == "user" and m.content.strip():
                line = " ".join(m.content.split())
                return line[:60] + ("…" if len(line) > 60 else "")
        return "(empty)"

    def to_json(self) -> dict:
        return {
            "version": FORMAT_VERSION, "id": self.id, "title": self.title or self.auto_title(),
            "created": self.created, "updated": self.updated, "model": self.model,
            "draft": self.draft, "system": self.system,
            "messages": [m.to_json() for m in self.messages],
        }

    @classmethod
    def from_json(cls, d: dict) -> "Conversation":
        return cls(
            id=d["id"], title=d.get("title", ""), created=d.get("created", 0.0),
            updated=d.get("updated", 0.0), model=d.get("model", ""), draft=d.get("draft", ""),
            system=d.get("system", ""),
            messages=[Message.from_json(m) for m in d.get("messages", [])],
        )


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class ConversationStore:
    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root else data_dir() / "conversations"

    def path(self, conv_id: str) -> Path:
        if not conv_id or "/" in conv_id or "\\" in conv_id or conv_id.startswith("."):
            raise KeyError(f"bad conversation id {conv_id!r}")
        return self.root / f"{conv_id}.json"

    def save(self, conv: Conversation) -> Path:
        conv.updated = time.time()
        p = self.path(conv.id)
        atomic_write_text(p, json.dumps(conv.to_json(), ensure_ascii=False, indent=1))
        return p

    def load(self, conv_id: str) -> Conversation:
        p = self.path(conv_id)
        if not p.exists():
            matches = [c for c in self.list() if c.id.startswith(conv_id)]
            if len(matches) != 1:
                raise KeyError(f"no saved conversation '{conv_id}'")
            p = self.path(matches[0].id)
        return Conversation.from_json(json.loads(p.read_text(encoding="utf-8")))

    def list(self) -> list[Conversation]:
        """Newest first; unreadable files (never ours, but be safe) are skipped."""
        out = []
        if not self.root.is_dir():
            return out
        for p in self.root.glob("*.json"):
            try:
                out.append(Conversation.from_json(json.loads(p.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        out.sort(key=lambda c: c.updated, reverse=True)
        return out

    def delete(self, conv_id: str) -> None:
        self.path(conv_id).unlink(missing_ok=True)

    def export_markdown(self, conv: Conversation, dest: Optional[Path] = None) -> Path:
        dest = Path(dest) if dest else self.root.parent / "exports" / f"{conv.id}.md"
        atomic_write_text(dest, to_markdown(conv))
        return dest


def to_markdown(conv: Conversation) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conv.created))
    lines = [f"# {conv.title or conv.auto_title()}", "",
             f"*{when} · model `{conv.model or 'default'}` · draft `{conv.draft or 'none'}`*", ""]
    if conv.system.strip():
        lines += ["## System", "", conv.system.strip(), ""]
    for m in conv.messages:
        head = {"user": "## You", "assistant": "## Assistant"}.get(m.role, f"## {m.role}")
        if m.finish == "stopped":
            head += " (stopped)"
        lines += [head, "", m.content.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"
