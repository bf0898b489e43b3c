"""Chat settings: what the options screen edits and `mlxspec chat` flags set."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

DRAFT_METHODS = ("auto", "none", "head", "model")  # "model" = a separate draft model
VERIFY_CHOICES = ("exact", "relaxed", "early-exit")  # mlxspec.engine.VERIFY_MODES


@dataclass(frozen=True)
class ChatSettings:
    model: Optional[str] = None  # None = the default model
    draft: str = "auto"  # auto | none | head | a draft model name/path
    temp: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    system: str = ""
    show_draft: bool = False  # colour tokens by origin (draft vs target)
    adapt: Optional[bool] = None  # the head learns from replies; None = the loader's default (on)
    idle_adapt_s: float = 30.0  # most idle training per reply (0 = none between replies)
    verify: str = "exact"  # exact (lossless) | relaxed | early-exit
    relax_weight: Optional[float] = None  # relaxed: the draft's weight (None: the default)
    relax_budget: Optional[float] = None  # relaxed: the TV budget per position (None: the default)

    @property
    def draft_method(self) -> str:
        return self.draft if self.draft in ("auto", "none", "head") else "model"

    @property
    def draft_model(self) -> str:
        return "" if self.draft_method != "model" else self.draft

    def engine_key(self) -> tuple:
        """Settings that need a reload of the engine when they change."""
        return (self.model or None, self.draft, self.adapt, self.verify, self.relax_weight, self.relax_budget)

    def load_options(self) -> dict:
        """Engine options for the loader (mlxspec.load keywords); None = its default."""
        out = {"adapt": self.adapt}
        if self.verify != "exact":  # exact: the loader's default
            out["verify"] = self.verify
        if self.verify == "relaxed":
            out.update({k: v for k, v in (("relax_weight", self.relax_weight),
                                          ("relax_budget", self.relax_budget)) if v is not None})
        return out

    def validate(self) -> Optional[str]:
        """One line describing the first problem, or None when the settings are usable."""
        if self.temp < 0:
            return f"temperature must be >= 0, got {self.temp}"
        if not 0 < self.top_p <= 1:
            return f"top-p must be in (0, 1], got {self.top_p}"
        if self.max_tokens <= 0:
            return f"max tokens must be positive, got {self.max_tokens}"
        if not 0 <= self.idle_adapt_s < float("inf"):  # NaN too
            return f"idle adaptation seconds must be a finite number >= 0, got {self.idle_adapt_s}"
        if not self.draft.strip():
            return "draft model name is empty"
        if self.verify not in VERIFY_CHOICES:
            return f"verify must be one of {', '.join(VERIFY_CHOICES)}, got {self.verify!r}"
        w, b = self.relax_weight, self.relax_budget  # mlxspec.relaxed's ranges (NaN fails too)
        if w is not None and not 0 <= w < 1:
            return f"relax weight must be in [0, 1), got {w}"
        if b is not None and not 0 <= b <= 1:
            return f"relax budget (a total-variation distance) must be in [0, 1], got {b}"
        return None

    def with_(self, **changes) -> "ChatSettings":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)
