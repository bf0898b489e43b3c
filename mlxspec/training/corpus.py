"""The training corpus for draft heads, offline by default.

Default recipe (`default_corpus_files`), all already on the machine, no downloads:
- code:  the Python standard library's own sources (`sysconfig` stdlib dir, *.py,
         skipping test suites, site-packages and generated tables), sorted by path;
- prose: licence texts (/usr/share/common-licenses) and package documentation
         (/usr/share/doc: copyright files, READMEs, changelogs, *.txt/*.md, gzip'ed
         ones decompressed).
Code and prose documents are interleaved one for one so both kinds fill the token budget.
`--corpus FILES|DIR` replaces the recipe with the given files (directories are walked for
text files).
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from mlxspec.textfiles import read_text

_SKIP_DIRS = {"test", "tests", "site-packages", "idle_test", "__pycache__", "lib2to3", "encodings",
              "unicodedata", "pydoc_data", "ensurepip"}
PROSE_ROOTS = ("/usr/share/common-licenses", "/usr/share/doc")
MAX_FILE_BYTES = 400_000
MAX_DOC_TOKENS = 2048  # per file in the default recipe: many files, not a few long ones


def stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for f in sorted(filenames):
            if f.endswith(".py") and not f.startswith("test_"):
                p = Path(dirpath) / f
                try:
                    if 200 < p.stat().st_size < MAX_FILE_BYTES:
                        out.append(p)
                except OSError:
                    pass
    return out


def prose_documents(roots: Sequence[str] = PROSE_ROOTS) -> list[Path]:
    out = []
    for r in roots:
        root = Path(r)
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in sorted(filenames):
                p = Path(dirpath) / f
                low = f.lower()
                base = low[:-3] if low.endswith(".gz") else low
                if not (base.startswith(("copyright", "readme", "changelog", "news", "authors"))
                        or Path(base).suffix in {".txt", ".md", ".rst"}
                        or root.name == "common-licenses"):
                    continue
                try:
                    if p.is_file() and not p.is_symlink() and 200 < p.stat().st_size < MAX_FILE_BYTES:
                        out.append(p)
                except OSError:
                    pass
    return out


def _spread(paths: list[Path], seed: int) -> list[Path]:
    """A fixed shuffle, so a small token budget samples the whole tree, not its first
    directory."""
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order]


def default_corpus_files() -> list[Path]:
    """Code and prose interleaved one for one (the longer list's rest appended), each
    list in a fixed shuffled order."""
    code, prose = _spread(stdlib_sources(), 0), _spread(prose_documents(), 1)
    out: list[Path] = []
    for i in range(max(len(code), len(prose))):
        if i < len(code):
            out.append(code[i])
        if i < len(prose):
            out.append(prose[i])
    return out


def tokenize_corpus(tokenizer, paths: Sequence[Path], max_tokens: int,
                    sep: Optional[int] = None, max_doc_tokens: Optional[int] = None,
                    ) -> tuple[np.ndarray, int]:
    """Token stream of the documents (separated by `sep`, e.g. EOS) up to max_tokens,
    at most `max_doc_tokens` from each so that one long file cannot fill the budget.
    Returns (tokens, documents used)."""
    chunks: list[np.ndarray] = []
    total = 0
    used = 0
    for p in paths:
        text = read_text(p)
        if not text or not text.strip():
            continue
        ids = tokenizer.encode(text)[:max_doc_tokens]
        if sep is not None:
            ids = list(ids) + [sep]
        arr = np.asarray(ids, dtype=np.int32)
        chunks.append(arr[: max_tokens - total])
        total += chunks[-1].shape[0]
        used += 1
        if total >= max_tokens:
            break
    if not chunks:
        return np.zeros(0, dtype=np.int32), 0
    return np.concatenate(chunks), used


def iter_windows(n_tokens: int, seq_len: int) -> Iterator[int]:
    for start in range(0, n_tokens - seq_len, seq_len):
        yield start
