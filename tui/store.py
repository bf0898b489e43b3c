"""Saved conversations: one JSON file each under the user data dir, written atomically
(mlxspec/atomic.py: a crash or kill leaves either the old or the new version, never a mix).
A file that cannot be read is listed as unreadable, by name, never silently dropped.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from mlxspec.atomic import atomic_write_text, clean_stale_temps, is_temp

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
    unreadable: str = ""  # set (to why) on a listed file that could not be read; never saved

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
        """ValueError naming the file when it cannot be read."""
        p = self.path(conv_id)
        if not p.exists():
            matches = [c for c in self.list() if c.id.startswith(conv_id)]
            if len(matches) != 1:
                raise KeyError(f"no saved conversation '{conv_id}'")
            p = self.path(matches[0].id)
        return _read(p)

    def list(self) -> list[Conversation]:
        """Newest first. A file that cannot be read is listed too, titled as unreadable
        with its name and why, so the user can see it (and delete it)."""
        out = []
        if not self.root.is_dir():
            return out
        clean_stale_temps(self.root)  # temp files of a killed save
        for p in self.root.glob("*.json"):
            if is_temp(p):
                continue
            try:
                out.append(_read(p))
            except UnreadableConversation as exc:
                try:
                    when = p.stat().st_mtime
                except OSError:
                    when = 0.0
                out.append(Conversation(id=p.stem, title=f"(unreadable: {p.name} {exc.reason})",
                                        created=when, updated=when, unreadable=exc.reason))
        out.sort(key=lambda c: c.updated, reverse=True)
        return out

    def delete(self, conv_id: str) -> None:
        self.path(conv_id).unlink(missing_ok=True)

    def export_markdown(self, conv: Conversation, dest: Optional[Path] = None) -> Path:
        dest = Path(dest) if dest else self.root.parent / "exports" / f"{conv.id}.md"
        atomic_write_text(dest, to_markdown(conv))
        return dest


class UnreadableConversation(ValueError):
    def __init__(self, path: Path, reason: str):
        super().__init__(f"saved conversation {path} {reason}")
        self.path, self.reason = path, reason


def _read(p: Path) -> Conversation:
    try:
        return Conversation.from_json(json.loads(p.read_text(encoding="utf-8")))
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        why = "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        why = f"is not valid JSON (line {exc.lineno}, column {exc.colno})"
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        why = f"is not a saved conversation ({type(exc).__name__}: {exc})"
    raise UnreadableConversation(p, why)


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
