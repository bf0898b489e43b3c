"""Training the learned relax weight (relax_head.py) of one draft/target pair, on data the
project makes here: the target answers generated arithmetic word problems (seeds apart
from the shipped eval's, so the eval stays held out), each answer is checked, and every
position of every reply gives (features of p and q, the reply's token, its reward).

The objective per position, for the weight w the head gives it:
    J(w) = reward * log p_ens_w(y) + lam * acceptance_w,   acceptance_w = sum_x min(q, p_ens_w)
(the blend keeps mass on tokens of replies that were right, and a draft token from q is
kept more often). J is tabulated on a grid of w and interpolated linearly, so the head's
two parameters a, c are fitted by plain gradient ascent in numpy.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from mlxspec.relax_head import N_FEATURES, RelaxHead, features
from mlxspec.relaxed import ensemble

GRID = 10  # weights tabulated in [0, w_max]
_LOG_FLOOR = -20.0


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def tabulate(p_rows, q_rows, tokens, reward: float, w_max: float, lam: float):
    """(features (n, F), J on the grid (n, GRID)) for the positions of one reply."""
    grid = np.linspace(0.0, w_max, GRID)
    feats = np.zeros((len(tokens), N_FEATURES))
    table = np.zeros((len(tokens), GRID))
    for i, (p, q, y) in enumerate(zip(p_rows, q_rows, tokens)):
        feats[i] = features(p, q)
        for k, w in enumerate(grid):
            e = ensemble(p, q, float(w))
            table[i, k] = reward * max(np.log(max(e[y], 1e-300)), _LOG_FLOOR) + lam * np.minimum(q, e).sum()
    return feats, table


def fit(feats: np.ndarray, table: np.ndarray, w_max: float, steps: int = 500, lr: float = 0.5,
        seed: int = 0) -> tuple[RelaxHead, dict]:
    """Gradient ascent of the mean interpolated J over w = w_max * sigmoid(a . f + c)."""
    mu, sd = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    z = (feats - mu) / sd
    rng = np.random.default_rng(seed)
    a, c = rng.normal(size=N_FEATURES) * 0.01, 0.0
    step = w_max / (GRID - 1)
    rows = np.arange(len(z))

    def value_and_slope(w):
        k = np.clip((w / step).astype(int), 0, GRID - 2)
        frac = w / step - k
        lo, hi = table[rows, k], table[rows, k + 1]
        return lo + frac * (hi - lo), (hi - lo) / step

    for _ in range(steps):
        s = 1.0 / (1.0 + np.exp(-(z @ a + c)))
        w = w_max * s
        _, slope = value_and_slope(w)
        g = slope * w_max * s * (1 - s)  # dJ/d(logit)
        a += lr * (z * g[:, None]).mean(axis=0)
        c += lr * float(g.mean())
    s = 1.0 / (1.0 + np.exp(-(z @ a + c)))
    value, _ = value_and_slope(w_max * s)
    head = RelaxHead(a / sd, float(c - (a / sd) @ mu), w_max)  # on raw features
    best_static = table.mean(axis=0)
    return head, {"objective": float(value.mean()), "mean_weight": float((w_max * s).mean()),
                  "best_static_weight": float(np.linspace(0, w_max, GRID)[int(best_static.argmax())]),
                  "best_static_objective": float(best_static.max()), "positions": int(len(z))}


def collect(engine, draft_model, problems, max_tokens: int, w_max: float, lam: float,
            progress: Optional[Callable[[int], None]] = None):
    """Replies of the target (exact, through `engine`) to `problems`, checked, tabulated."""
    import mlx.core as mx

    from mlxspec.eval import arith
    from mlxspec.sampling import SamplingParams, fit_vocab

    V = engine.model.args.vocab_size
    all_f, all_t, rewards = [], [], []
    for i, prob in enumerate(problems):
        prompt = engine.encode_prompt(prob.prompt)
        out = list(engine.stream(prompt, SamplingParams(), max_tokens=max_tokens))
        tokens = [r.token for r in out]
        text = "".join(r.text for r in out)
        reward = float(arith.correct(prob, text))
        seq = mx.array(prompt + tokens)[None]
        lo, hi = len(prompt) - 1, len(prompt) - 1 + len(tokens)
        p = softmax_rows(np.array(engine.model(seq)[0, lo:hi]))
        q = softmax_rows(fit_vocab(np.array(draft_model(seq)[0, lo:hi]), V))
        f, t = tabulate(p, q, tokens, reward, w_max, lam)
        all_f.append(f)
        all_t.append(t)
        rewards.append(reward)
        if progress is not None:
            progress(i + 1)
    return np.concatenate(all_f), np.concatenate(all_t), rewards
