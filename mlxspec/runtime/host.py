"""Every device->host read of the decode loop goes through `to_host`, and is counted.

Logits stay on the device: the engine reads back token ids and the few probabilities
the rejection rule compares, not rows over the vocabulary. Each call of `to_host` is
one host sync (the host waits for the device once, for all the arrays it is given) and
adds the bytes it copied. The counters are per thread (an engine runs its reply on one
thread); the engine takes a `snapshot()` at the start of a reply and reports the
difference (SpecStats: host_syncs, host_syncs_per_round, host_bytes_per_token).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass
class Traffic:
    syncs: int = 0  # times the host waited for the device to read something
    bytes: int = 0  # bytes copied from the device

    def since(self, start: "Traffic") -> "Traffic":
        return Traffic(self.syncs - start.syncs, self.bytes - start.bytes)


_local = threading.local()


def counter() -> Traffic:
    """This thread's running totals."""
    t = getattr(_local, "traffic", None)
    if t is None:
        t = _local.traffic = Traffic()
    return t


def snapshot() -> Traffic:
    t = counter()
    return Traffic(t.syncs, t.bytes)


def to_host(*arrays: mx.array):
    """The arrays as numpy arrays, evaluated together (one sync): one array for one
    argument, a tuple for several."""
    mx.eval(*arrays)
    out = tuple(np.array(a) for a in arrays)
    t = counter()
    t.syncs += 1
    t.bytes += sum(a.nbytes for a in out)
    return out[0] if len(out) == 1 else out


def ids(array: mx.array) -> list[int]:
    """Token ids (any integer or float array of them) as Python ints."""
    return [int(x) for x in np.asarray(to_host(array)).reshape(-1)]
