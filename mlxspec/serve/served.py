"""What the server knows of its one loaded model, for checking requests before they queue:
its names, drafter, verification mode, vocabulary and context, and its tokenizer (text and
chat messages -> token ids; the tokenizer is not MLX, so the event loop may call it)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

DRAFT_ALIASES = ("auto", "default")  # per request: the server's own drafter


@dataclass
class ServedModel:
    name: str
    draft: str  # the loaded drafter's name, "none" when nothing speculates
    verify: str  # the engine's verification mode
    vocab: Optional[int]
    max_context: Optional[int]
    default_max_tokens: int
    engine: object = field(repr=False, default=None)  # only its tokenizer methods are used here
    aliases: tuple = ()  # other ids a request may name the model by (its folder)
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def of(cls, engine, spec: Optional[str], default_max_tokens: int) -> "ServedModel":
        args = getattr(getattr(engine, "model", None), "args", None)
        aliases = tuple(a for a in {spec, str(spec).rstrip("/")} if a and a != engine.model_name)
        return cls(name=engine.model_name, draft=engine.draft_name, verify=getattr(engine, "verify_mode", "exact"),
                   vocab=getattr(args, "vocab_size", None), max_context=engine.max_context,
                   default_max_tokens=default_max_tokens, engine=engine, aliases=aliases)

    def knows(self, model_id: Optional[str]) -> bool:
        return model_id is None or model_id == self.name or model_id in self.aliases

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return list(self.engine.encode_chat(messages))

    def encode_text(self, text: str) -> list[int]:
        return list(self.engine.encode_prompt(text, chat_template=False))

    def card(self) -> dict:
        """The model as GET /v1/models lists it."""
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "mlxspec",
                "draft": self.draft, "verify": self.verify, "max_context": self.max_context}
