"""Streaming text with stop strings: hold back only what could still become a stop."""
from __future__ import annotations

from typing import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self._buf = ""

    def _held(self) -> int:
        """Length of the longest tail of the buffer that starts some stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self._buf)), best, -1):
                if s.startswith(self._buf[-n:]):
                    best = n
                    break
        return best

    def feed(self, segment: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit, whether a stop string was hit)."""
        self._buf += segment
        if not self.stops:
            out, self._buf = self._buf, ""
            return out, False
        hits = [i for i in (self._buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self._buf = self._buf[: min(hits)], ""
            return out, True
        cut = len(self._buf) - self._held()
        out, self._buf = self._buf[:cut], self._buf[cut:]
        return out, False

    def flush(self, detokenizer) -> str:
        """End of generation: the detokenizer's last bytes plus anything held back."""
        detokenizer.finalize()
        text, _ = self.feed(detokenizer.last_segment)
        out, self._buf = text + self._buf, ""
        return out
