"""Early-exit verification (HiSpec): a middle level inside the target between the draft
and the full verification (loop.py), its policy (policy.py), the trained exit
(exit_adapter.py, exit_store.py) and what an engine keeps (state.py); the exit layer's
runner is mlxspec/runtime/early_exit.py."""
from mlxspec.hierarchy.loop import early_exit_round
from mlxspec.hierarchy.state import prepare, reply_ended

__all__ = ["early_exit_round", "prepare", "reply_ended"]
