"""What a draft head learns and how it is scored, for both offline training
(mlxspec/training) and on-device adaptation (mlxspec/adapt): the loss against the
target's own states and the teacher-forced acceptance proxies. Below both, so neither
imports the other.
"""
from __future__ import annotations

import mlx.core as mx
import numpy as np

from mlxspec.head.model import DraftHead

GRAD_CLIP = 1.0  # global gradient norm: big-activation targets (Qwen) diverge without it


def default_vocab_size(vocab_size: int) -> int:
    """A few thousand to 32k core tokens depending on the vocabulary."""
    return int(min(vocab_size, max(4096, min(32768, vocab_size // 8))))


def shifted_features(t_hn: mx.array) -> mx.array:
    """Feature input per position: the final normalised hidden state one position back
    (zeros at the start, as after a fresh prefill)."""
    return mx.concatenate([mx.zeros_like(t_hn[:, :1]), t_hn[:, :-1]], axis=1)


def head_features(head: DraftHead, t_hn, noise: float = 0.0, key=None):
    if not head.config.feature_input:
        return None
    feat = shifted_features(t_hn)
    if noise > 0:
        # The draft chain feeds the head its own (imperfect) predictions: train on
        # perturbed features so it does not rely on exact ones.
        rms = mx.sqrt(mx.mean(feat * feat, axis=-1, keepdims=True))
        feat = feat + noise * rms * mx.random.normal(feat.shape, key=key)
    return feat


def head_loss(head: DraftHead, h_k, t_hn, core_w, hidden_weight: float, noise: float = 0.0, key=None,
              weights=None, unroll: int = 1):
    """KL to the target's distribution on the core vocabulary plus (1 - cosine) to its
    final hidden state, averaged over positions with `weights` (B, T) (None: all 1).
    With `unroll` > 1 a feature-input head is also run on its own predicted features
    (as inside a draft chain) and each pass adds its loss."""
    t_logits = t_hn @ core_w.T
    t_logp = t_logits - mx.logsumexp(t_logits, axis=-1, keepdims=True)
    t_p = mx.exp(t_logp)
    t_top = mx.argmax(t_logits, axis=-1)
    w = mx.ones(t_hn.shape[:2]) if weights is None else weights
    w_sum = mx.maximum(w.sum(), 1e-6)
    t_norm = mx.linalg.norm(t_hn, axis=-1)
    feat = head_features(head, t_hn, noise, key)
    passes = unroll if head.config.feature_input else 1
    loss = 0.0
    for i in range(passes):
        s_hn = head(h_k, feat, "causal", None)
        s_logits = s_hn @ core_w.T
        s_logp = s_logits - mx.logsumexp(s_logits, axis=-1, keepdims=True)
        kl = mx.sum(t_p * (t_logp - s_logp), axis=-1)
        cos = mx.sum(s_hn * t_hn, axis=-1) / (mx.linalg.norm(s_hn, axis=-1) * t_norm + 1e-6)
        loss = loss + (w * (kl + hidden_weight * (1.0 - cos))).sum() / w_sum
        if i == 0:
            first_kl = (w * kl).sum() / w_sum
            agree = (w * (mx.argmax(s_logits, axis=-1) == t_top)).sum() / w_sum
        feat = shifted_features(s_hn)
    return loss / passes, (first_kl, agree)


def score_batches(head: DraftHead, batches, W: mx.array, core_ids: np.ndarray) -> dict:
    """How often the head's top token equals the target's (greedy acceptance), over the
    full vocabulary and over the static core; the mean of sum(min(p, q)) at temperature
    1 (sampled acceptance); and, for feature-input heads, the top-1 agreement when every
    position gets the head's own predicted feature (as inside a draft chain)."""
    core = mx.array(core_ids)
    n = tot_full = tot_core = tot_soft = tot_chain = 0.0
    for h_k, t_hn, w in batches:
        w = mx.ones(t_hn.shape[:2]) if w is None else (w > 0).astype(mx.float32)
        s_hn = head(h_k, head_features(head, t_hn), "causal", None)
        t_log = t_hn @ W.T
        s_log = s_hn @ W.T
        t_top = mx.argmax(t_log, axis=-1)
        if head.config.feature_input:
            c_hn = head(h_k, shifted_features(s_hn), "causal", None)
            chain = (w * (mx.argmax(c_hn @ W.T, axis=-1) == t_top)).sum()
            tot_chain += chain.item()
        full = (w * (mx.argmax(s_log, axis=-1) == t_top)).sum()
        s_core = mx.take(s_log, core, axis=-1)
        core_top = mx.take(core, mx.argmax(s_core, axis=-1))
        agree_core = (w * (core_top == t_top)).sum()
        p = mx.softmax(t_log, axis=-1)
        q = mx.softmax(s_core, axis=-1)
        soft = (w * mx.minimum(mx.take(p, core, axis=-1), q).sum(axis=-1)).sum()
        cnt = w.sum()
        mx.eval(full, agree_core, soft, cnt)
        tot_full += full.item()
        tot_core += agree_core.item()
        tot_soft += soft.item()
        n += cnt.item()
    n = max(n, 1)
    out = {
        "top1_agreement_full_vocab": round(tot_full / n, 4),
        "top1_agreement_core_vocab": round(tot_core / n, 4),
        "sampled_acceptance_core_t1": round(tot_soft / n, 4),
        "eval_tokens": int(n),
    }
    if head.config.feature_input:
        out["top1_agreement_chained"] = round(tot_chain / n, 4)
    return out
