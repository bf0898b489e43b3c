"""Load a target model and pick its drafter: the objects behind `mlxspec.load`."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from mlxspec.errors import (HeadLoadError, MlxspecError, ModelLoadError, ModelNotFoundError,
                             TokenizerMismatchError, first_line)

DEFAULT_MODEL = "smollm2-135m-instruct"
log = logging.getLogger("mlxspec")


class LoadedModel:
    def __init__(self, name: str, path: Path, model, tokenizer, config: dict):
        self.name, self.path, self.model, self.tokenizer, self.config = name, path, model, tokenizer, config

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size") or self.model.args.vocab_size)

    @property
    def max_context(self) -> Optional[int]:
        n = self.config.get("max_position_embeddings")
        return int(n) if n else None


def load_model(spec: Optional[str], lazy: bool = False) -> LoadedModel:
    """Registry name, local folder or hub id -> model in the backend's fast dtype
    (`lazy`: weights are read when first evaluated, for a rank that keeps a part)."""
    from mlxspec.hub import store

    if spec is None:
        spec = DEFAULT_MODEL
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError("the model name is empty")
    path = store.resolve_model(spec)
    store.check_model_dir(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder must never reach out
    import mlx.core as mx
    from mlx_lm.utils import load as mlx_load

    try:
        model, tokenizer, config = mlx_load(str(path), lazy=lazy, return_config=True)
    except MlxspecError:
        raise
    except Exception as exc:  # mlx-lm raises many kinds for bad folders
        raise ModelLoadError(f"could not load model '{spec}' from {path}: {first_line(exc)}") from None
    if mx.default_device() == mx.cpu:
        model.set_dtype(mx.float32)  # the CPU backend's fast dtype
    name = path.name if Path(spec).exists() else spec
    return LoadedModel(name, path, model, tokenizer, config)


def check_tokenizers(target: LoadedModel, draft: LoadedModel) -> None:
    """Same token ids must mean the same strings; vocab sizes may differ by padding."""
    tv = target.tokenizer._tokenizer.get_vocab()
    dv = draft.tokenizer._tokenizer.get_vocab()
    if tv != dv:
        differ = len(set(tv.items()) ^ set(dv.items()))
        raise TokenizerMismatchError(
            f"draft '{draft.name}' and target '{target.name}' use different tokenizers "
            f"({differ} vocabulary entries differ); pick a draft model from the target's family"
        )


def _suggested_draft(name: str) -> Optional[str]:
    from mlxspec.hub import registry

    try:
        return registry.get_entry(name).draft
    except Exception:
        return None


def _head_drafter(target: LoadedModel, required: bool, **kwargs):
    from mlxspec.drafters import head

    if not head.find_heads(target.path):
        if required:
            raise HeadLoadError(
                f"no draft head trained for '{target.name}'; run: mlxspec train-head -m {target.name}"
            )
        return None
    try:
        return head.load_head_drafter(target.model, target.tokenizer, target.path, **kwargs)
    except HeadLoadError as exc:
        if required:
            raise
        log.warning("draft head unusable (%s); using another drafter", exc)
        return None


def adapt_wanted(adapt: Optional[bool]) -> bool:
    """Adaptation is on unless turned off (adapt=False, or MLXSPEC_ADAPT=0 for front ends
    that pass no option through, e.g. chat)."""
    if adapt is None:
        return os.environ.get("MLXSPEC_ADAPT", "1").strip().lower() not in ("0", "false", "no", "off")
    return bool(adapt)


def _adaptive_drafter(target: LoadedModel, required: bool):
    """The head that learns from every reply: the model's adapted head, else its newest
    trained head, else a new one from the target's own layer (issue 15)."""
    from mlxspec.adapt import Adapter
    from mlxspec.drafters.adaptive import AdaptiveHeadDrafter
    from mlxspec.runtime.layered import UnsupportedArchitectureError

    try:
        adapter = Adapter.open(target.model, target.path, target.tokenizer)
        return AdaptiveHeadDrafter(target.model, adapter, vocab_mode=adapter.vocab_mode)
    except (HeadLoadError, UnsupportedArchitectureError, ValueError) as exc:
        if required:
            raise HeadLoadError(first_line(exc)) from None
        log.warning("adapting head unusable (%s); using another drafter", first_line(exc))
        return None


def _model_drafter(target: LoadedModel, spec: str):
    from mlxspec.drafters.draft_model import ModelDrafter

    draft = load_model(spec)
    check_tokenizers(target, draft)
    return ModelDrafter(draft.model, target.vocab_size, label=f"draft:{draft.name}")


def _reply_store(target: LoadedModel):
    """The model's reply store as a branch source, if it has a usable one."""
    from mlxspec.drafters.reply_store import StoreDrafter, find_store, load_store

    path = find_store(target.path)
    if path is None:
        return None
    try:
        return StoreDrafter(load_store(path, target.vocab_size))
    except ValueError as exc:
        log.warning("%s; drafting without it", exc)
        return None


def with_branches(target: LoadedModel, primary, lookup: bool = True, store: bool = True):
    """`primary` (or nothing) with the free branch sources: copied tokens (lookup) and,
    beside a head, the model's reply store (built from the target's own replies)."""
    from mlxspec.drafters.compose import Composite
    from mlxspec.drafters.lookup import LookupDrafter

    branches = [LookupDrafter()] if lookup else []
    if store and primary is not None and getattr(primary, "head", None) is not None:
        st = _reply_store(target)
        if st is not None:
            branches.append(st)
    if not branches:
        return primary
    if primary is None:
        return Composite(None, branches, label="lookup")
    return Composite(primary, branches, label=primary.name + "+" + "+".join(b.name for b in branches))


def _auto_drafter(target: LoadedModel, adapt: bool = False):
    """The fastest drafter we have measured for this target: its registry draft partner
    when installed, else a trained head, else prompt lookup (no model, no training)."""
    partner = _suggested_draft(target.name)
    if partner:
        try:
            return _model_drafter(target, partner)
        except MlxspecError as exc:
            log.info("suggested draft model unavailable (%s)", exc)
    # A head trained up front (train-head), adapted further when adaptation is on. A head
    # made only by adaptation (chat or --draft head started it) once its measured
    # acceptance pays; a new one would start near 0% and cost lookup its first replies.
    trained = _trained_heads(target)
    if not trained:
        return _adapted_if_it_pays(target) if adapt else None
    if adapt:
        return _adaptive_drafter(target, required=False)
    return _head_drafter(target, required=False, head_path=trained[0])


AUTO_MIN_ACCEPTANCE = 0.15  # where adapted heads measured faster than plain and lookup (docs)


def _adapted_if_it_pays(target: LoadedModel):
    """The model's adapted head (loaded once), if it drafted well enough over its last
    replies; None otherwise (and when it has none: auto does not start one)."""
    from mlxspec.adapt.state import adapted_path

    if not adapted_path(target.path).is_file():
        return None
    drafter = _adaptive_drafter(target, required=False)
    recent = drafter.adapter.counters.acceptance[-4:] if drafter is not None else []
    pays = len(recent) >= 2 and sum(recent) / len(recent) >= AUTO_MIN_ACCEPTANCE
    return drafter if pays else None


def _trained_heads(target: LoadedModel) -> list:
    from mlxspec.adapt.state import ADAPTED
    from mlxspec.drafters import head

    return [p for p in head.find_heads(target.path) if p.stem != ADAPTED]


def build_drafter(target: LoadedModel, draft: Optional[str], lookup: bool = True,
                  adapt: Optional[bool] = None):
    if draft is not None and (not isinstance(draft, str) or not draft.strip()):
        raise ModelNotFoundError("the draft name is empty (use none for no drafter)")
    choice = (draft or "none").strip()
    if choice == "none":
        return None
    if choice == "lookup":
        return with_branches(target, None)
    if choice == "auto":
        primary = _auto_drafter(target, adapt_wanted(adapt))
    elif choice == "head":
        from mlxspec.runtime.layered import UnsupportedArchitectureError, check_architecture

        try:
            check_architecture(target.model)
        except UnsupportedArchitectureError as exc:  # drafters that need no model internals still work
            log.warning("%s; drafting with prompt lookup instead", exc)
            return with_branches(target, None)
        primary = _adaptive_drafter(target, True) if adapt_wanted(adapt) else _head_drafter(target, required=True)
    else:
        primary = _model_drafter(target, choice)
    return with_branches(target, primary, lookup=lookup)


def bench_variants(target: LoadedModel) -> dict:
    """The trained head with each vocabulary mode, for `mlxspec bench`: the full LM head,
    the static frequency-ranked core, and the dynamic core + context tail (the default),
    plus the default without the reply store and without any branch (the head alone)."""
    from mlxspec.drafters.reply_store import find_store

    out = {}
    try:
        for mode in ("full", "static", "dynamic"):
            out[f"head {mode}-vocab"] = with_branches(target, _head_drafter(target, True, vocab_mode=mode))
        if find_store(target.path) is not None:
            out["head dynamic-vocab, no reply store"] = with_branches(target, _head_drafter(target, True), store=False)
        out["head dynamic-vocab, no copy or store"] = _head_drafter(target, True)
    except HeadLoadError as exc:
        log.warning("%s; skipping the head drafter in the benchmark", exc)
        return {}
    return out


def load_engine(model: Optional[str] = None, draft: Optional[str] = "auto", lookup: bool = True,
                adapt: Optional[bool] = None, **engine_kwargs):
    from mlxspec.engine import Engine

    from mlxspec.distributed.launch import world

    group = world()
    target = load_model(model, lazy=group is not None)
    if group is not None:
        draft = _pipelined(target, group, draft)
    if engine_kwargs.get("num_draft") == 0:
        draft = "none"  # no drafts: load no drafter
    drafter = build_drafter(target, draft, lookup=lookup, adapt=adapt)
    engine = Engine(
        target.model,
        target.tokenizer,
        drafter,
        model_name=target.name,
        draft_name=drafter.name if drafter else "none",
        max_context=target.max_context,
        cost_path=target.path / ".mlxspec-costs.json",
        **engine_kwargs,
    )
    if engine.verify_mode == "early-exit":  # the trained exit learns across sessions
        from mlxspec.hierarchy.exit_store import exit_path

        engine.exit_path = exit_path(target.path)
    return engine


def _pipelined(target: LoadedModel, group, draft: Optional[str]) -> Optional[str]:
    """Split the target over the ranks (ranks > 0 serve their layers and never return);
    on rank 0 the drafter that works without the target's layers in this process."""
    from mlxspec.distributed.launch import start
    from mlxspec.errors import InvalidParameterError

    start(target.model, group)
    if draft == "head":
        raise InvalidParameterError("--draft head needs all of the target's layers in one process; "
                                    "under mlx.launch use lookup or a draft model")
    if draft == "auto":  # the registered draft partner if installed, else lookup (no head)
        from mlxspec.hub import store

        partner = _suggested_draft(target.name)
        try:
            return partner if partner and store.resolve_model(partner) else "lookup"
        except MlxspecError:
            return "lookup"
    return draft
