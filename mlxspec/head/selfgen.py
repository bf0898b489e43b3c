"""Self-distillation text: the target's own greedy chat replies to a fixed set of prompts.

Raw corpus text (stdlib sources, docs) has no chat template and none of the target's
reply style, and a head trained only on it agrees with the target far less on chat
replies than on the corpus. These files put both in the training corpus; the labels
still come from the target's teacher pass, as for any corpus.

    python -m mlxspec.head.selfgen -m qwen2.5-coder-1.5b-instruct -o DIR [--limit N]

Replies are generated in batches with mlx-lm's `batch_generate` (a batched forward costs
little more than one row on a CPU, so this runs several times faster than one by one).
The prompts are not the benchmark's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CODE_TASKS = [
    "checks whether a string is a palindrome", "merges two sorted lists", "flattens a nested list",
    "counts word frequencies in a text", "reads a JSON file and returns a dict",
    "computes the greatest common divisor of two numbers", "validates an email address with a regex",
    "removes duplicates from a list while keeping order", "converts Celsius to Fahrenheit",
    "finds the longest common prefix of a list of strings", "implements binary search",
    "reverses the words in a sentence", "chunks a list into pieces of size n",
    "computes a moving average over a list", "parses a date string into a datetime",
    "retries a function call with exponential backoff", "implements a simple LRU cache",
    "checks whether a number is prime", "transposes a matrix given as a list of lists",
    "walks a directory tree and lists all .txt files", "groups a list of dicts by a key",
    "computes the factorial of n recursively", "implements a stack class with push and pop",
    "downloads a URL with urllib and returns the text", "sorts a dictionary by its values",
    "computes the median of a list", "generates all permutations of a string",
    "implements quicksort", "converts a Roman numeral to an integer", "times a function with a decorator",
]
PROSE_TOPICS = [
    "a rainy morning in a small harbour town", "an old clockmaker's workshop", "the first day of spring",
    "a train journey through the mountains", "a lost cat finding its way home",
    "a market at dawn", "a scientist on the verge of a discovery", "a letter that arrived forty years late",
    "a city at night seen from a rooftop", "a garden left untended for a year",
    "two friends meeting after a long time", "a storm over the open sea",
]
QA_TOPICS = [
    "how vaccines train the immune system", "why the sky is blue", "what inflation is",
    "how a hash table works", "what photosynthesis does", "why we have leap years",
    "how TCP differs from UDP", "what a black hole is", "how compound interest works",
    "what causes tides", "how a compiler differs from an interpreter", "why ice floats on water",
    "what the difference between a list and a tuple in Python is", "how GPS finds your position",
    "what machine learning is", "why bread rises",
]


def default_prompts() -> list[str]:
    out = [f"Write a Python function that {t}. Keep it short." for t in CODE_TASKS]
    out += [f"Write a short paragraph describing {t}." for t in PROSE_TOPICS]
    out += [f"Explain {t} in a few sentences." for t in QA_TOPICS]
    return out


def generate_replies(model, tokenizer, prompts: list[str], max_tokens: int = 96, batch: int = 16,
                     log=lambda m: None) -> list[str]:
    """Each prompt's full chat text (template + greedy reply + end of turn)."""
    from mlx_lm.generate import batch_generate

    from mlxspec.prompting import encode_chat

    texts = []
    for i in range(0, len(prompts), batch):
        t0 = time.perf_counter()
        chunk = prompts[i : i + batch]
        toks = [encode_chat(tokenizer, [{"role": "user", "content": p}]) for p in chunk]
        res = batch_generate(model, tokenizer, toks, max_tokens=max_tokens, return_token_ids=True)
        for p_toks, r_ids in zip(toks, res.token_ids):
            ids = list(p_toks) + [int(t) for t in r_ids]
            texts.append(tokenizer.decode(ids))
        log(f"{i + len(chunk)}/{len(prompts)} replies, {time.perf_counter() - t0:.0f}s for this batch")
    return texts


def main(argv=None) -> int:
    import mlxspec  # noqa: F401  (BLAS before mlx)
    from mlxspec.head.io import atomic_write_text
    from mlxspec.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)
    target = load_model(a.model)
    prompts = default_prompts()[: a.limit]
    out = Path(a.out)
    for i, text in enumerate(generate_replies(target.model, target.tokenizer, prompts, a.max_tokens, a.batch,
                                              log=lambda m: print(m, file=sys.stderr, flush=True))):
        atomic_write_text(out / f"reply-{i:04d}.txt", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
