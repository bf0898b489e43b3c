"""`python -m mlxspec.cli.selfgen_cmd`: the target answers the prompt sets with its states
kept (mlxspec.training.selfgen), for `train-head --features`; then the model's reply
store is (re)built from the shards."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlxspec.training.prompt_sets import PROMPT_SETS
from mlxspec.training.selfgen import generate, write_reply_store


def main(argv=None) -> int:
    from mlxspec.runtime.layered import LayeredModel
    from mlxspec.head.model import default_exit_layer
    from mlxspec.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--exit-layer", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--set", choices=sorted(PROMPT_SETS), default="base",
                    help="prompt set; each writes its own shard series, so sets add up in one folder")
    ap.add_argument("--store-only", action="store_true",
                    help="only (re)build the model's reply store from the shards already in --out")
    a = ap.parse_args(argv)
    target = load_model(a.model)
    k = a.exit_layer or default_exit_layer(LayeredModel(target.model).num_layers)
    series, make_prompts = PROMPT_SETS[a.set]
    prompts = make_prompts()[: a.limit]
    if not a.store_only:
        generate(target.model, target.tokenizer, Path(a.out), k, prompts, a.max_tokens, a.batch,
                 log=lambda m: print(m, file=sys.stderr, flush=True), series=series)
    path = write_reply_store(Path(a.out), target.path, target.vocab_size)
    print(f"reply store: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
