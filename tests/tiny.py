"""Tiny random models and a character tokenizer: engine tests without downloads."""
from __future__ import annotations

import mlxspec  # noqa: F401  (OpenBLAS before mlx.core)
import mlx.core as mx
from mlx.utils import tree_map
from mlx_lm.models import gemma, gemma2, llama, qwen2, qwen3

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n"


ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
# qN: mlx-lm affine N-bit of the float32 model (float32 scales); q4-bf16: of the
# bfloat16 model, as mlx-community's 4-bit checkpoints are (bf16 scales and norms).
FORMATS = ("float32", "bfloat16", "float16", "q4", "q8", "q4-bf16")
GROUP_SIZE = 32  # divides every tiny input width (hidden 32, MLP 2 * hidden)


def _args(arch: str, vocab: int, layers: int, hidden: int, tied: bool):
    common = dict(model_type=arch, hidden_size=hidden, num_hidden_layers=layers,
                  intermediate_size=2 * hidden, num_attention_heads=4, num_key_value_heads=2,
                  rms_norm_eps=1e-5, vocab_size=vocab)
    mod = {"llama": llama, "mistral": llama, "qwen2": qwen2, "qwen3": qwen3,
           "gemma": gemma, "gemma2": gemma2}[arch]
    if arch.startswith("gemma"):
        if not tied:
            raise ValueError(f"{arch} always ties its LM head to the embedding")
        extra = dict(head_dim=hidden // 4)
        if arch == "gemma2":  # a small pre-attention scalar keeps the random scores lively
            extra.update(query_pre_attn_scalar=hidden // 4, attn_logit_softcapping=50.0,
                         final_logit_softcapping=30.0)
    else:
        extra = dict(tie_word_embeddings=tied, max_position_embeddings=4096)
        if arch == "qwen3":
            extra.update(head_dim=hidden // 4, rope_theta=1e6)
    return mod, mod.ModelArgs(**common, **extra)


def tiny_model(vocab: int = 64, layers: int = 2, hidden: int = 32, seed: int = 0,
               arch: str = "llama", scale: float = 1.0, fmt: str = "float32",
               tied: bool | None = None, group_size: int = GROUP_SIZE):
    """A random model (deterministic in `seed`); `scale` > 1 sharpens its next-token
    distributions. arch: one of ARCHS; fmt: one of FORMATS (q4/q8 quantize the model
    with mlx-lm: every Linear and the embedding, so an untied lm_head is a
    QuantizedLinear and a tied head a QuantizedEmbedding); tied: LM head tied to the
    embedding (default: llama/mistral/gemma tied, qwen untied)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if tied is None:
        tied = not arch.startswith("qwen")
    mx.random.seed(seed)
    mod, args = _args(arch, vocab, layers, hidden, tied)
    model = mod.Model(args)
    if scale != 1.0:
        model.update(tree_map(lambda p: p * scale, model.parameters()))
    model.set_dtype(mx.float32)
    if fmt in ("bfloat16", "float16") or fmt.endswith("-bf16"):
        model.set_dtype(mx.bfloat16 if fmt != "float16" else mx.float16)
    if fmt.startswith("q"):
        quantize(model, int(fmt[1:].split("-")[0]), group_size)
    mx.eval(model.parameters())
    return model


def quantize(model, bits: int, group_size: int = GROUP_SIZE):
    """mlx-lm's own quantization (as `mlx_lm convert -q` does), in place."""
    import contextlib
    import io

    from mlx_lm.utils import quantize_model

    with contextlib.redirect_stdout(io.StringIO()):  # it prints bits per weight
        quantize_model(model, {}, group_size, bits)
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
