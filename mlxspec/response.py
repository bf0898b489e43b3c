"""What the engine streams: one GenerationResponse per token, with running stats."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class SpecStats:
    method: str = "plain"  # drafter name, or "plain"
    rounds: int = 0  # verification forwards of the target
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens accepted
    plain_steps: int = 0  # single-token target forwards (no drafts)
    draft_vocab: Optional[int] = None  # drafter's current vocabulary size (pruned heads)
    fallback: bool = False  # speculation currently paused because it was measured to lose

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verification round (accepted drafts + the target's token)."""
        return (self.accepted + self.rounds) / self.rounds if self.rounds else 0.0

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "plain_steps": self.plain_steps,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "mean_accepted_length": round(self.mean_accepted_length, 3),
            "draft_vocab": self.draft_vocab,
            "fallback": self.fallback,
        }


@dataclass
class GenerationResponse:
    text: str  # new text since the previous response (may be empty)
    token: int
    from_draft: bool  # proposed by the drafter and accepted by the target
    prompt_tokens: int
    prompt_tps: float
    generation_tokens: int
    generation_tps: float
    peak_memory: float  # GB
    stats: SpecStats = field(default_factory=SpecStats)
    finish_reason: Optional[str] = None  # "stop" (EOS / stop string), "length"
