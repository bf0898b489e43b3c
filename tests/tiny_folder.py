"""Write a tiny random model as a real MLX/HF folder (config, safetensors, tokenizer), so
the whole load path runs in tests without downloads."""
from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from tiny import tiny_model

WORDS = ["<unk>", "<eos>"] + [f"w{i}" for i in range(62)]


def make_model_dir(path: Path, seed: int = 0, words: list[str] = WORDS, hidden: int = 32, layers: int = 2,
                   model_type: str = "llama") -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = len(words)
    model = tiny_model(vocab, layers=layers, hidden=hidden, seed=seed, scale=3.0, arch=model_type)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    config = {
        "model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers,
        "intermediate_size": 2 * hidden, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "vocab_size": vocab, "tie_word_embeddings": not model_type.startswith("qwen"),
        "max_position_embeddings": 128, "eos_token_id": 1,
    }
    if model_type == "qwen3":
        config.update(head_dim=hidden // 4, rope_theta=1e6)
    (path / "config.json").write_text(json.dumps(config))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(str(path))
    return path
