"""One line per request on stderr: status, tokens, tok/s, acceptance, prefill and timing.

    POST /v1/chat/completions 200 stream · 64 tok · 41.2 tok/s · acc 63% (38/60, head:adapting+lookup)
        · prompt 212 tok, 12 prefilled · 1.61 s
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Optional

log = logging.getLogger("mlxspec.serve")


def setup(stream=None) -> None:
    """The server's log lines go to stderr as they are (no prefix), once."""
    if not log.handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def line(method: str, path: str, status: int, started: float, finished=None, stream: bool = False,
         error: Optional[str] = None) -> str:
    parts = [f"{method} {path} {status}" + (" stream" if stream else "")]
    if finished is not None:
        u = finished.usage
        x = u.get("mlxspec", {})
        parts.append(f"{u['completion_tokens']} tok ({finished.finish_reason})")
        parts.append(f"{x.get('generation_tps', 0.0):.1f} tok/s")
        if x.get("drafted"):
            parts.append(f"acc {x.get('acceptance_rate', 0.0):.0%} ({x['accepted']}/{x['drafted']}, "
                         f"mean length {x.get('mean_accepted_length', 0.0):.2f}, {x.get('drafter')})")
        else:
            parts.append(f"draft {x.get('drafter', 'plain')}: no drafts")
        parts.append(f"prompt {u['prompt_tokens']} tok, {x.get('prompt_tokens_prefilled')} prefilled")
    if error:
        parts.append(error)
    parts.append(f"{time.perf_counter() - started:.2f} s")
    return " · ".join(parts)


def request(method: str, path: str, status: int, started: float, finished=None, stream: bool = False,
            error: Optional[str] = None) -> None:
    log.info("%s", line(method, path, status, started, finished, stream, error))
