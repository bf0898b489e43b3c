"""Learning from the person's own files: the target reads them (prefill only, no
generation) and the linear head's ridge statistics take every position as a row.

A reply teaches the head what the target says; a file teaches it how the target's states
move over text of the same kind (the person's code, their contracts, their notes), and a
prefill costs a small part of what generating the same tokens does. Rows from files weigh
TEXT_WEIGHT of a reply's row: a use session's offline replay put the map fitted on both,
files at a quarter, above the map fitted on either alone (docs/benchmarks.md,
"Thirteenth session: the head reads the person's files").
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import mlx.core as mx

from mlxspec.errors import InvalidParameterError

TEXT_WEIGHT = 0.25
WINDOW = 512  # tokens per prefill: the target's states over a window, no cache kept between
MAX_FILE_BYTES = 4 << 20  # a larger file (a log, a dump) is skipped, not read whole


def text_files(paths: Sequence[str]) -> list[Path]:
    """The text files named, or under the folders named (hidden ones skipped);
    InvalidParameterError for a path that does not exist or when none is found."""
    from mlxspec.textfiles import expand_paths

    if not paths:
        return []
    return list(dict.fromkeys(expand_paths(paths, what="--texts")))  # a file named twice is read once


def windows(ids: Sequence[int], size: int = WINDOW) -> Iterable[list[int]]:
    for i in range(0, len(ids), size):
        w = list(ids[i: i + size])
        if len(w) > 1:
            yield w


def encode_files(tokenizer, files: Sequence[Path], max_tokens: Optional[int] = None) -> list[list[int]]:
    """Token ids per readable file (binary and unreadable ones skipped), at most
    `max_tokens` in all."""
    from mlxspec.textfiles import read_text

    docs, total = [], 0
    for f in files:
        text = read_text(f, MAX_FILE_BYTES)
        if not text or not text.strip():
            continue
        ids = list(tokenizer.encode(text))
        if max_tokens is not None:
            ids = ids[: max(0, max_tokens - total)]
        if len(ids) > 1:
            docs.append(ids)
            total += len(ids)
        if max_tokens is not None and total >= max_tokens:
            break
    return docs


def learn_from_texts(adapter, docs: Iterable[Sequence[int]], weight: float = TEXT_WEIGHT,
                     progress: Optional[Callable[[int], None]] = None, window: int = WINDOW,
                     exit=None) -> dict:
    """Fold the target's states over the token ids of `docs` into the adapter's linear
    head, refit it once and save it (atomically, as after a reply). With `exit` (a
    trained exit, hierarchy/exit_adapter.py) the same forwards teach it too: its layers'
    states against the final state, as a prompt's rows (the caller refits and saves it).
    Returns {"tokens", "rows", "seconds"}."""
    import time

    from mlxspec.head.linear import LINEAR
    from mlxspec.runtime.exit_tap import over_cache, to_final
    from mlxspec.runtime.layered import LayeredModel

    trainer = adapter.trainer
    if adapter.head.config.kind != LINEAR:
        raise InvalidParameterError(
            f"learning from files needs the linear head; this model's head is a {adapter.head.config.kind} head "
            "(`mlxspec head reset` starts a linear one)")
    t0 = time.perf_counter()
    lm = LayeredModel(adapter.model)
    k = adapter.head.config.exit_layer
    tokens = rows = 0
    for ids in docs:
        for w in windows(ids, window):
            h_k = lm.run_layers(lm.embed(mx.array(w)[None]), 0, k, None)
            hn = to_final(lm, h_k, k, exit, over_cache(lm, None), prompt=True)  # the exit observes
            # row t: (h_k at t, hn at t-1) -> hn at t; the window's first position has no t-1
            trainer.fold(h_k[0, 1:], hn[0, :-1], hn[0, 1:], weight)
            if adapter.buffer.counts is not None:
                adapter.buffer.counts.add(w)
            tokens += len(w)
            rows += len(w) - 1
            if progress is not None:
                progress(tokens)
    if rows:
        trainer.refit()
        adapter.counters.updates += 1
        adapter.counters.text_tokens += tokens
        adapter.save()
    return {"tokens": tokens, "rows": rows, "seconds": round(time.perf_counter() - t0, 2)}

