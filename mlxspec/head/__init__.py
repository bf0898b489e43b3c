"""Self-speculation: a compact draft head on the target's early layers.

    model.py   the head (one transformer block of the target's architecture + norm)
    vocab.py   frequency-ranked core + dynamic long-tail draft vocabulary
    io.py      head files (safetensors + JSON), atomic, with a target fingerprint
    corpus.py  the default offline training corpus (stdlib sources + local prose)
    train.py   distillation from the target (`mlxspec train-head`)
    bench.py   acceptance / speed measurements for the head drafter
The drafter is in mlxspec/drafters/head.py, its shared-cache target runner in
mlxspec/drafters/head_runner.py.
"""
