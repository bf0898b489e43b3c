"""Under `mlx.launch`: split the target over the ranks, send ranks > 0 into their serving
loop (they never return to the command), and stop them when rank 0 exits."""
from __future__ import annotations

import atexit
import os
import sys

from mlxspec.distributed.pipeline import Pipeline, RankLostError, world  # noqa: F401 (world: loading)
from mlxspec.distributed.shard import shard


def start(model, group) -> Pipeline:
    pipe = shard(model, group)
    if pipe.rank == 0:
        atexit.register(pipe.stop)
        return pipe
    from mlxspec.distributed.worker import serve

    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # only rank 0 prints
    code = 0
    try:
        serve(model, pipe)
    except RankLostError:
        code = 1  # rank 0 went away: it reports; this rank just ends
    except BaseException as exc:  # a worker's own failure: one line, then the ring breaks
        sys.stderr.write(f"Error: rank {pipe.rank}: {type(exc).__name__}: {exc}\n")
        code = 1
    sys.stderr.flush()
    os._exit(code)
