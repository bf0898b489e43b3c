"""One rank of a test of the sharded target (tests/test_distributed.py starts N of these
with MLX_RANK / MLX_HOSTFILE, as mlx.launch does), or, with no such variables, the
single-process reference. Rank 0 prints the jobs' token ids as JSON.

    python dist_driver.py TARGET DRAFT JOBS_JSON [--fault no-trim|die:N|hang:N]
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlxspec  # noqa: E402,F401  (OpenBLAS before mlx.core)


def run_jobs(target: str, draft: str, jobs: list) -> list:
    from mlxspec.drafters.compose import Composite
    from mlxspec.drafters.draft_model import ModelDrafter
    from mlxspec.drafters.lookup import LookupDrafter
    from mlxspec.engine import Engine
    from mlxspec.loading import load_engine, load_model
    from mlxspec.sampling import SamplingParams

    base = load_engine(target, draft="none", adaptive=False)  # ranks > 0 serve here
    dm = load_model(draft).model
    vocab = base.model.args.vocab_size
    out = []
    for job in jobs:
        kind = job["draft"]
        if kind == "none":
            drafter = None
        elif kind == "lookup":
            drafter = Composite(None, [LookupDrafter()], label="lookup")
        else:  # the draft model, with lookup branches: trees
            drafter = Composite(ModelDrafter(dm, vocab, min_confidence=0.0), [LookupDrafter()], label="model")
        eng = Engine(base.model, base.tokenizer, drafter, max_context=base.max_context,
                     adaptive=job.get("adaptive", False), num_draft=job.get("k", 4))
        params = SamplingParams(temp=job.get("temp", 0.0), top_p=job.get("top_p", 1.0))
        prompt = list(job["prompt"])
        ids = []
        for turn in range(job.get("turns", 1)):  # later turns reuse the cached prefix
            toks = [e.token for e in eng.tokens(prompt + ids, params, job["n"], seed=job.get("seed", 0) + turn)]
            ids += toks
        out.append(ids)
    return out


def _faults(spec: str) -> None:
    """Test faults on a worker rank: a missed rewind, or dying / hanging after N forwards."""
    from mlx_lm.models.cache import KVCache

    if spec == "no-trim":
        KVCache.trim = lambda self, n: 0
        return
    what, n = spec.split(":")
    seen = {"n": 0}

    def step(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] > int(n):
            if what == "die":
                os._exit(9)
            time.sleep(3600)
        return orig(*args, **kwargs)

    from mlxspec.runtime.layered import LayeredModel

    orig = LayeredModel.run_layers
    LayeredModel.run_layers = lambda self, *a, **k: step(self, *a, **k)


if __name__ == "__main__":
    from mlxspec.errors import MlxspecError

    target, draft, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if "--fault" in sys.argv and os.environ.get("MLX_RANK", "0") != "0":
        _faults(sys.argv[sys.argv.index("--fault") + 1])
    try:
        result = run_jobs(target, draft, jobs)
    except MlxspecError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))
