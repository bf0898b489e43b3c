"""A fake model source for store tests (no network): a tiny llama GGUF with a byte-level
BPE tokenizer, split across fake wheels, and a registry naming them."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
NAME = "tiny-llama"
PACKAGES = ("tiny-part1==1.0", "tiny-part2==1.0")
MEMBER = "tiny_model/*.bin"


def _byte_tokens() -> list[str]:
    """GPT-2's byte -> printable character table: the 256 byte tokens of byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def tiny_gguf(path: Path, seed: int = 0, nan: bool = False) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    tokens = _byte_tokens() + ["Ġt", "he", "<|endoftext|>"]
    merges = ["Ġ t", "h e"]
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([1] * (vocab - 1) + [3])
    w.add_token_merges(merges)
    w.add_eos_token_id(vocab - 1)
    w.add_bos_token_id(vocab - 1)

    def t(name, *shape):
        a = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if nan:
            a[...] = np.nan
        w.add_tensor(name, a)

    t("token_embd.weight", vocab, HIDDEN)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    hd = HIDDEN // HEADS
    for i in range(LAYERS):
        t(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        t(f"blk.{i}.attn_k.weight", KV_HEADS * hd, HIDDEN)
        t(f"blk.{i}.attn_v.weight", KV_HEADS * hd, HIDDEN)
        t(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        t(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        t(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        t(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def fake_wheels(gguf_path: Path, folder: Path, packages=PACKAGES) -> tuple[list[Path], str, int]:
    """Split the GGUF over one wheel per package (as the registry's split models are);
    returns (wheels, sha256, size) of the joined file."""
    data = Path(gguf_path).read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    cut = len(data) // len(packages)
    wheels = []
    for i, req in enumerate(packages):
        name, _, version = req.partition("==")
        part = data[i * cut: (i + 1) * cut if i < len(packages) - 1 else len(data)]
        whl = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as zf:
            zf.writestr(f"tiny_model/part{i}.bin", part)
            zf.writestr("tiny_model/__init__.py", "")
        wheels.append(whl)
    return wheels, hashlib.sha256(data).hexdigest(), len(data)


def write_registry(path: Path, sha: str, size: int, name: str = NAME, packages=PACKAGES) -> Path:
    pk = ", ".join(json.dumps(p) for p in packages)
    path.write_text(f'["{name}"]\ndescription = "tiny test model"\narch = "llama"\nsource = "pypi-gguf"\n'
                    f'packages = [{pk}]\nmember = "{MEMBER}"\nsize = {size}\nsha256 = "{sha}"\n')
    return path


def fake_source(tmp: Path, seed: int = 0, nan: bool = False) -> dict:
    """Wheels + registry under `tmp`; the env a test (or a child process) needs."""
    tmp.mkdir(parents=True, exist_ok=True)
    g = tiny_gguf(tmp / "src.gguf", seed=seed, nan=nan)
    wheels, sha, size = fake_wheels(g, tmp / "wheels")
    reg = write_registry(tmp / "registry.toml", sha, size)
    (tmp / "models").mkdir(exist_ok=True)
    return {"MLXSPEC_REGISTRY": str(reg), "MLXSPEC_MODELS_DIR": str(tmp / "models"),
            "FAKE_WHEELS": str(tmp / "wheels")}


def patch_download(monkeypatch, wheels_dir) -> list:
    """download_wheels copies the fake wheels instead of running pip; returns the calls."""
    import shutil

    from mlxspec.hub import pull

    calls = []

    def fake(packages, folder):
        calls.append(tuple(packages))
        folder.mkdir(parents=True, exist_ok=True)
        for p in sorted(Path(wheels_dir).glob("*.whl")):
            shutil.copy2(p, folder / p.name)
        return [pull._wheel_for(p, folder) for p in packages]

    monkeypatch.setattr(pull, "download_wheels", fake)
    return calls


# The start of a child process that pulls from the fake source (for kill -9 tests): the
# download is patched to copy $FAKE_WHEELS, as patch_download does in-process.
CHILD_FAKE_DOWNLOAD = r"""
import os, shutil, sys
from pathlib import Path
import mlxspec
from mlxspec.hub import pull as P

def fake(packages, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for p in sorted(Path(os.environ["FAKE_WHEELS"]).glob("*.whl")):
        shutil.copy2(p, folder / p.name)
    return [P._wheel_for(p, folder) for p in packages]

P.download_wheels = fake
"""

CHILD_PULL = CHILD_FAKE_DOWNLOAD + r"""
print("start", flush=True)
kw = {"dtype": sys.argv[2]} if len(sys.argv) > 2 and not sys.argv[2].startswith("-") else {}
P.pull(sys.argv[1], force="--force" in sys.argv, **kw)
print("done", flush=True)
"""
