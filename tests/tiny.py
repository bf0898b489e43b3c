"""Tiny random models and a character tokenizer: engine tests without downloads."""
from __future__ import annotations

import mlxspec  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx
from mlx.utils import tree_map
from mlx_lm.models import llama, qwen2

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n"


def tiny_model(vocab: int = 64, layers: int = 2, hidden: int = 32, seed: int = 0,
               arch: str = "llama", scale: float = 1.0):
    """A random model; `scale` > 1 sharpens its next-token distributions."""
    mx.random.seed(seed)
    mod = llama if arch == "llama" else qwen2
    args = mod.ModelArgs(
        model_type=arch,
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=vocab,
        tie_word_embeddings=(arch == "llama"),
        max_position_embeddings=4096,
    )
    model = mod.Model(args)
    if scale != 1.0:
        model.update(tree_map(lambda p: p * scale, model.parameters()))
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    return model


def perturbed_copy(model, noise: float, seed: int = 1):
    """Same architecture and weights plus noise: a draft that agrees often, not always."""
    import copy

    mx.random.seed(seed)
    draft = copy.deepcopy(model)
    draft.update(tree_map(lambda p: p + noise * mx.random.normal(p.shape), draft.parameters()))
    mx.eval(draft.parameters())
    return draft


class _Detok:
    def __init__(self, tok):
        self.tok, self.tokens, self._emitted = tok, [], 0

    def reset(self):
        self.tokens, self._emitted = [], 0

    def add_token(self, t):
        self.tokens.append(t)

    def finalize(self):
        pass

    @property
    def last_segment(self):
        text = self.tok.decode(self.tokens)
        seg, self._emitted = text[self._emitted:], len(text)
        return seg


class CharTokenizer:
    """Token i is ALPHABET[i % len(ALPHABET)]; token `eos` ends generation."""

    has_chat_template = False

    def __init__(self, vocab: int = 64, eos: int | None = None):
        self.vocab = vocab
        self.eos_token_ids = {eos} if eos is not None else set()

    def encode(self, text):
        return [ALPHABET.index(c) % self.vocab for c in text if c in ALPHABET]

    def decode(self, ids):
        return "".join(ALPHABET[i % len(ALPHABET)] for i in ids if i not in self.eos_token_ids)

    @property
    def detokenizer(self):
        return _Detok(self)
