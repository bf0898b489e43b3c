"""Distil a draft head from its target (`mlxspec train-head`).

Teacher-forced on a local corpus: for each window of tokens the target runs all its
layers once (no cache); the head sees the target's layer-k hidden states and learns the
target's own output distribution (KL on the core vocabulary) and its final normalised
hidden state (cosine). No labels from anywhere else. Or, with `features`, on replies the
target generated itself with those states kept (`mlxspec.training.selfgen`): no teacher pass.

A run with the same settings resumes from its checkpoint (checkpoint.py); the teacher's
features are computed once into it (teacher.py).
The finished head is written atomically to `models/<model>/heads/<name>.safetensors` plus
`<name>.json`, and the checkpoint is removed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from mlxspec.head.io import heads_dir, save_head
from mlxspec.head.model import DraftHead, default_exit_layer, new_head
from mlxspec.head.objective import GRAD_CLIP, default_vocab_size, head_loss
from mlxspec.head.vocab import rank_core
from mlxspec.runtime.layered import LayeredModel
from mlxspec.training.checkpoint import Checkpoint
from mlxspec.training.progress import bar, log as _log
from mlxspec.training.settings import TrainResult, TrainSettings
from mlxspec.training.teacher import evaluate, evaluate_features, teacher_features


RANK_KEEP = 65536  # ranked ids stored in the head file (core size can change at load)


def _init_from(head: DraftHead, hf) -> None:
    """Load the weights of a read head file `hf` into `head` (same shape required)."""
    from mlxspec.errors import InvalidParameterError

    path = hf.path
    mine, theirs = head.config, hf.config
    for f in ("exit_layer", "intermediate_size", "feature_input", "hidden_size"):
        if getattr(mine, f) != getattr(theirs, f):
            raise InvalidParameterError(
                f"--init-from {path.name}: its {f.replace('_', ' ')} is {getattr(theirs, f)}, "
                f"this run's is {getattr(mine, f)}")
    head.load_weights(list(hf.weights.items()), strict=True)
    mx.eval(head.parameters())


def train(
    model,
    tokenizer,
    model_dir: Path,
    settings: TrainSettings,
    name: str = "default",
    resume: bool = True,
    time_budget_s: Optional[float] = None,
    ckpt_every: int = 25,
    progress: bool = True,
    stop_after: Optional[int] = None,
    on_step: Optional[Callable[[int, float], None]] = None,
) -> Optional[TrainResult]:
    """Train (or resume) a head. Returns None when stopped early by `stop_after` or the
    time budget before the last step (the checkpoint is kept; run again to resume)."""
    from mlxspec.textfiles import expand_paths
    from mlxspec.training.corpus import MAX_DOC_TOKENS, default_corpus_files, tokenize_corpus

    lm = LayeredModel(model)
    s = settings
    if s.exit_layer is None:
        s.exit_layer = default_exit_layer(lm.num_layers)
    if s.vocab is None:
        s.vocab = default_vocab_size(lm.vocab_size)
    s.vocab = int(min(s.vocab, lm.vocab_size))
    out_dir = heads_dir(model_dir)

    # -- resume or start -----------------------------------------------------------------
    ckpt = Checkpoint(out_dir, name, s.resume_key())
    state = ckpt.open(resume)

    eos = list(getattr(tokenizer, "eos_token_ids", None) or [])
    fdata = None
    if s.features:
        # Rows the target generated itself, its states kept: no teacher pass needed.
        from mlxspec.training.selfgen import load_features

        fdata = load_features(Path(s.features), lm.fingerprint(), s.exit_layer, s.prompt_weight)
        if len(fdata) < s.eval_windows + 2:
            from mlxspec.errors import InvalidParameterError

            raise InvalidParameterError(
                f"--features has {len(fdata)} replies; need more than eval-windows + 1 ({s.eval_windows + 1})")
        tokens = fdata.tokens[fdata.tokens >= 0].astype(np.int64)
        corpus_desc = {"recipe": "self-generated replies with the target's states (mlxspec.training.selfgen)",
                       "paths": [str(s.features)], "documents": len(fdata), "tokens": int(tokens.size)}
    elif state is not None:
        tokens = ckpt.tokens()
        corpus_desc = ckpt.corpus_desc
    else:
        paths = expand_paths(s.corpus) if s.corpus else default_corpus_files()
        tokens, used = tokenize_corpus(tokenizer, paths, s.corpus_tokens, sep=eos[0] if eos else None,
                                       max_doc_tokens=None if s.corpus else MAX_DOC_TOKENS)
        corpus_desc = {
            "recipe": "files" if s.corpus else "default (python stdlib sources + local licence/doc texts)",
            "paths": [str(p) for p in s.corpus] if s.corpus else [],
            "documents": used,
            "tokens": int(tokens.shape[0]),
        }
    need = (s.eval_windows + 2) * (s.seq_len + 1)
    if fdata is None and tokens.shape[0] < need:
        from mlxspec.errors import InvalidParameterError

        raise InvalidParameterError(
            f"the corpus has {tokens.shape[0]} tokens; need at least {need} for seq-len {s.seq_len}"
        )
    counts = np.bincount(tokens, minlength=lm.vocab_size)[: lm.vocab_size]
    ranked = rank_core(counts, min(RANK_KEEP, lm.vocab_size), always=eos)
    init_head = None
    if s.init_from:
        # Fine-tuning on a small corpus: its tokens first, then the ranking the head was
        # trained with (a few thousand tokens cannot rank a whole vocabulary).
        from mlxspec.head.io import read_head

        init_head = read_head(Path(s.init_from))
        prior = [int(t) for t in init_head.core_ids]
        fresh = [int(t) for t in ranked if counts[t] > 0 or t in eos]
        ranked = np.asarray(list(dict.fromkeys(fresh + prior))[:RANK_KEEP], dtype=np.int32)
    core_ids = ranked[: s.vocab]
    rng = np.random.default_rng(s.seed)
    if fdata is not None:
        perm = rng.permutation(len(fdata))
        eval_rows, train_rows = np.sort(perm[: s.eval_windows]), np.sort(perm[s.eval_windows :])
        n_train = len(train_rows)
    else:
        starts = np.arange(0, tokens.shape[0] - s.seq_len, s.seq_len)
        windows = np.stack([tokens[i : i + s.seq_len] for i in starts])
        perm = rng.permutation(len(windows))
        eval_w = windows[perm[: s.eval_windows]]
        train_w = windows[perm[s.eval_windows :]]
        n_train = len(train_w)

    head = new_head(model, s.exit_layer, s.ffn_ratio, feature_input=s.feature_input)
    if init_head is not None:
        _init_from(head, init_head)
    sched = optim.join_schedules(
        [optim.linear_schedule(s.lr * 0.05, s.lr, max(1, s.warmup)),
         optim.cosine_decay(s.lr, max(1, s.steps - s.warmup), s.lr * 0.05)],
        [max(1, s.warmup)],
    )
    opt = optim.AdamW(learning_rate=sched, weight_decay=0.0)
    opt.init(head.trainable_parameters())
    ckpt.corpus_desc = corpus_desc
    if state is None:
        ckpt.begin(tokens if fdata is None else None)  # `features` rows are read from their own folder again
    step = ckpt.track(head, opt, resume=state is not None and not ckpt.fresh_head)
    if step:
        _log(f"resuming {name} from step {step} ({ckpt.dir})")
    W = lm.lm_head_weight
    core_w = W[mx.array(core_ids)]
    t0 = time.perf_counter()
    start_step = step
    stopped = False

    def out_of_time() -> bool:
        return time_budget_s is not None and time.perf_counter() - t0 > time_budget_s

    # -- phase 1: the teacher's features, once (memory-mapped, resumable) ----------------
    # (rows from `features` already carry them). Training row i is row_ids[i] of feats_*.
    if fdata is not None:
        feats_hk, feats_hn, feats_w, row_ids = fdata.hk, fdata.hn, fdata.weights, train_rows
    else:
        feats = teacher_features(model, s.exit_layer, train_w, ckpt, s.batch, progress,
                                 lambda: out_of_time() or (stop_after is not None and stop_after <= 0))
        if feats is None:
            return None
        (feats_hk, feats_hn), feats_w, row_ids = feats, None, np.arange(n_train)

    # -- phase 2: train the head on the stored features ------------------------------
    loss_and_grad = nn.value_and_grad(head, head_loss)
    order = np.random.default_rng(s.seed + 1).permutation(n_train)
    ema = None
    ema_agree = None
    t1 = time.perf_counter()
    try:
        while step < s.steps:
            idx = row_ids[np.sort(order[[(step * s.batch + i) % n_train for i in range(s.batch)]])]
            width, w = feats_hk.shape[1], None
            if feats_w is not None:  # rows end in padding (weight 0): drop the shared tail
                w_rows = feats_w[idx]
                used = np.nonzero(w_rows.any(axis=0))[0]
                width = int(used[-1]) + 1 if used.size else 1
                w = mx.array(w_rows[:, :width])
            h_k = mx.array(feats_hk[idx, :width])
            t_hn = mx.array(feats_hn[idx, :width])
            (loss, (kl, agree)), grads = loss_and_grad(
                head, h_k, t_hn, core_w, s.hidden_weight, s.feature_noise,
                mx.random.key(s.seed * 1_000_003 + step),  # noise per step: resumes exactly
                w, s.unroll)
            grads, _ = optim.clip_grad_norm(grads, max_norm=GRAD_CLIP)
            opt.update(head, grads)
            mx.eval(head.parameters(), opt.state, loss, agree)
            step += 1
            lv, av = loss.item(), agree.item()
            ema = lv if ema is None else 0.9 * ema + 0.1 * lv
            ema_agree = av if ema_agree is None else 0.9 * ema_agree + 0.1 * av
            if on_step:
                on_step(step, lv)
            if progress:
                bar(step, s.steps, t1, start_step, f"loss {ema:.3f} top1 {ema_agree:.3f}")
            ckpt.step = step
            if step % ckpt_every == 0 and step < s.steps:
                ckpt.save()
            if (stop_after is not None and step - start_step >= stop_after) or out_of_time():
                stopped = step < s.steps
                break
    except KeyboardInterrupt:
        ckpt.step = step
        ckpt.save()
        if progress:
            sys.stderr.write("\n")
        _log(f"interrupted at step {step}; checkpoint saved, run again to resume")
        raise
    if progress:
        sys.stderr.write("\n")
    if stopped:
        ckpt.save()
        _log(f"stopped at step {step}/{s.steps}; checkpoint saved in {ckpt.dir}, run again to resume")
        return None

    head.eval()
    if fdata is not None:  # held-out replies, scored on reply positions only
        metrics = evaluate_features(model, head, fdata.hk[eval_rows], fdata.hn[eval_rows],
                                    fdata.replies[eval_rows].astype(np.float32), core_ids)
    else:
        metrics = evaluate(model, head, eval_w, core_ids)
    metrics["train_loss_ema"] = round(float(ema), 4) if ema is not None else None
    metrics["train_seconds_this_run"] = round(time.perf_counter() - t0, 1)
    settings_out = {
        "name": name,
        "exit_layer": s.exit_layer,
        "vocab": s.vocab,
        "vocab_mode": s.vocab_mode,
        "steps": step,
        "batch": s.batch,
        "seq_len": s.seq_len,
        "lr": s.lr,
        "ffn_ratio": s.ffn_ratio,
        "feature_input": s.feature_input,
        "unroll": s.unroll if s.feature_input else 1,
        "corpus": corpus_desc,
        "head_params": head.num_params(),
        "head_bytes": head.nbytes(),
        "target": lm.fingerprint()["model_type"],
        "target_layers": lm.num_layers,
        "acceptance": metrics,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = out_dir / f"{name}.safetensors"
    save_head(path, head, ranked, lm.fingerprint(), settings_out)
    ckpt.discard()
    return TrainResult(path, step, settings_out, metrics)

