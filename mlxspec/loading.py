"""Load a target model and pick its drafter: the objects behind `mlxspec.load`."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from mlxspec.errors import HeadLoadError, MlxspecError, ModelLoadError, TokenizerMismatchError

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


def load_model(spec: Optional[str]) -> LoadedModel:
    """Registry name, local folder or hub id -> model in the backend's fast dtype."""
    from mlxspec.hub import store

    spec = spec or DEFAULT_MODEL
    path = store.resolve_model(spec)
    store.check_model_dir(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder must never reach out
    import mlx.core as mx
    from mlx_lm.utils import load as mlx_load

    try:
        model, tokenizer, config = mlx_load(str(path), return_config=True)
    except MlxspecError:
        raise
    except Exception as exc:  # mlx-lm raises many kinds for bad folders
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model '{spec}' from {path}: {first}") from None
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


def _head_drafter(target: LoadedModel, required: bool):
    from mlxspec.drafters import head

    if not head.find_heads(target.path):
        if required:
            raise HeadLoadError(
                f"no draft head trained for '{target.name}'; run: mlxspec train-head -m {target.name}"
            )
        return None
    try:
        return head.load_head_drafter(target.model, target.tokenizer, target.path)
    except HeadLoadError as exc:
        if required:
            raise
        log.warning("draft head unusable (%s); using another drafter", exc)
        return None


def _model_drafter(target: LoadedModel, spec: str):
    from mlxspec.drafters.draft_model import ModelDrafter

    draft = load_model(spec)
    check_tokenizers(target, draft)
    return ModelDrafter(draft.model, target.vocab_size, label=f"draft:{draft.name}")


def _auto_drafter(target: LoadedModel):
    """The fastest drafter we have measured for this target: its registry draft partner
    when installed (on Qwen2.5-Coder-1.5B the 0.5B beats our trained head, see
    docs/benchmarks.md), else a trained head, else none."""
    partner = _suggested_draft(target.name)
    if partner:
        try:
            return _model_drafter(target, partner)
        except MlxspecError as exc:
            log.info("suggested draft model unavailable (%s)", exc)
    return _head_drafter(target, required=False)


def load_engine(model: Optional[str] = None, draft: Optional[str] = "auto", **engine_kwargs):
    from mlxspec.engine import Engine

    target = load_model(model)
    drafter = None
    choice = (draft or "none").strip()
    if choice == "auto":
        drafter = _auto_drafter(target)
    elif choice == "head":
        drafter = _head_drafter(target, required=True)
    elif choice != "none":
        drafter = _model_drafter(target, choice)
    return Engine(
        target.model,
        target.tokenizer,
        drafter,
        model_name=target.name,
        draft_name=drafter.name if drafter else "none",
        max_context=target.max_context,
        **engine_kwargs,
    )

