"""Layer taps: the hidden states at a few layers of a target forward, handed with its
final normalised states to an observer (the trained early exit learns from them:
hierarchy/exit_adapter.py). No forward runs twice: the layers are run in pieces split
at the tapped layers. A runner whose `exit_tap` is None (the default) runs as before.

An observer has `layers` (layer indices m: the state entering layer m, i.e. after
layers 0..m-1) and `observe(states: {m: (1, T, d)}, hn: (1, T, d), prompt: bool)`
(prompt: a prefill chunk, not generated tokens).
"""
from __future__ import annotations

from typing import Callable

import mlx.core as mx

Step = Callable[[mx.array, int, int], mx.array]  # runs layers [a, b) on h


def run_split(h: mx.array, start: int, end: int, layers, step: Step) -> tuple[mx.array, dict]:
    """Layers [start, end) on h through `step`, in pieces cut at the tapped layers in
    [start, end); returns the output and {m: state entering layer m}."""
    states, at = {}, start
    for m in sorted(int(x) for x in layers):
        if start <= m < end:
            if m > at:
                h = step(h, at, m)
                at = m
            states[m] = h
    if end > at:
        h = step(h, at, end)
    return h, states


def over_cache(lm, cache, mask=None) -> Step:
    """The step that runs layers with lm.run_layers over the runner's caches."""
    return lambda x, a, b: lm.run_layers(x, a, b, cache, mask)


def to_final(lm, h: mx.array, start: int, tap, step: Step, prompt: bool = False) -> mx.array:
    """Layers start..L-1 on h through `step`, normalised: the final states. With a tap
    (None: none), cut at its layers, and the states there go to it with the result."""
    out, states = run_split(h, start, lm.num_layers, tap.layers if tap is not None else (), step)
    hn = lm.norm(out)
    if states:
        tap.observe(states, hn, prompt)
    return hn
