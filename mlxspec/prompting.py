"""Turning chat messages into token ids with the model's own chat template."""
from __future__ import annotations


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Apply the chat template with the generation prompt; plain join without one."""
    if not getattr(tokenizer, "has_chat_template", False):
        return list(tokenizer.encode("\n".join(m["content"] for m in messages)))
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)
