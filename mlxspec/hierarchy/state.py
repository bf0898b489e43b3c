"""What an engine keeps between early-exit rounds and replies: the exit level over its
runner, the policy, and the trained exit (its tap on the runner, its refit and file
between replies, the layer it runs at)."""
from __future__ import annotations

from typing import Optional

from mlxspec.hierarchy import exit_store
from mlxspec.hierarchy.exit_adapter import ExitAdapter, candidate_layers
from mlxspec.hierarchy.policy import ExitPolicy
from mlxspec.runtime.early_exit import ExitLevels


class ExitState:
    """What an engine keeps between early-exit rounds: the levels over its runner, the
    policy (its measurements carry from reply to reply) and the trained exit."""

    def __init__(self):
        self.levels: Optional[ExitLevels] = None
        self.policy: Optional[ExitPolicy] = None
        self.exit: Optional[ExitAdapter] = None
        self.unsupported = False


def engine_state(engine) -> Optional[ExitState]:
    st = engine.__dict__.setdefault("_early_exit", ExitState())
    if st.unsupported:
        return None
    new_reply = "exit_layer" not in engine.verify_stats
    if st.levels is None or st.levels.runner is not engine.runner:
        lm = engine.runner.lm
        if lm is None:
            st.unsupported = True
            return None
        if st.exit is None and getattr(engine, "trained_exit", True):
            try:
                st.exit = open_exit(engine, lm, int(getattr(engine.runner, "k", 0)))
            except ValueError:
                st.exit = None
        engine.runner.exit_tap = st.exit  # every forward teaches it (runtime/exit_tap.py)
        st.levels = None
        for d in getattr(engine.drafter, "parts", [engine.drafter]):
            if hasattr(d, "tree_width"):  # the middle level checks chains (README: trees)
                d.tree_width = 1
    if st.exit is not None and (new_reply or st.levels is None):
        _between_replies(engine, st)
    if st.levels is None:
        try:
            m = getattr(engine, "exit_layer", None)
            if not m and st.exit is not None:
                m = st.exit.choose(engine.cost or flat_costs())
            st.levels = ExitLevels(engine.runner, m, st.exit)
        except ValueError:
            st.unsupported = True
            return None
        share = st.levels.m / st.levels.lm.num_layers
        if st.policy is None or st.policy.mid_share != share:  # a new runner at the same layer keeps it
            fixed = getattr(engine, "tentative_length", None)
            st.policy = ExitPolicy(share, adaptive=engine.adaptive and fixed is None)
        if st.exit is not None:
            st.policy.prior = st.exit.agreement[st.levels.m].value
    st.levels.mid = engine.runner.length  # plain steps moved the runner since
    return st


def open_exit(engine, lm, above: int) -> ExitAdapter:
    """The engine's trained exit: its fixed layer or the candidates above the head's
    layers, loaded from `engine.exit_path` when it has one."""
    fixed = getattr(engine, "exit_layer", None)
    ad = ExitAdapter(lm, [fixed] if fixed else candidate_layers(lm.num_layers, above))
    path = getattr(engine, "exit_path", None)
    if path is not None:
        exit_store.load(path, ad, lm.fingerprint())
    return ad


def prepare(engine) -> None:
    """Before a reply's prefill: the trained exit is in place (refit on the last reply,
    its tap on the runner), so it learns from the prompt too."""
    st = engine_state(engine)
    if st is not None:
        exit_stats(engine.verify_stats, st)


def trained_exit(engine) -> Optional[ExitAdapter]:
    """The engine's trained exit, once an early-exit reply has made it (else None)."""
    st = engine.__dict__.get("_early_exit")
    return st.exit if st is not None else None


def exit_stats(stats: dict, st) -> None:
    stats.setdefault("exit_layer", st.levels.m)
    if st.exit is not None:
        stats.setdefault("exit_agreement", round(st.exit.agreement[st.levels.m].value, 4))
        stats.setdefault("exit_rows", st.exit.rows)


def reply_ended(engine) -> None:
    """After a reply (response.responses): the trained exit learns from it now, so a
    one-shot `generate` keeps what it taught."""
    st = engine.__dict__.get("_early_exit")
    if st is not None and st.exit is not None:
        _between_replies(engine, st)


def _between_replies(engine, st) -> None:
    """Refit the trained exit on what the last reply taught it, save it, and move the
    middle level to the layer that now pays best (a new policy for a new layer)."""
    if not st.exit.refit():
        return
    path = getattr(engine, "exit_path", None)
    if path is not None:
        exit_store.save(path, st.exit, st.exit.lm.fingerprint())
    if st.levels is None or getattr(engine, "exit_layer", None):
        return
    if st.exit.choose(engine.cost or flat_costs()) != st.levels.m:
        st.levels = None  # rebuilt at the chosen layer, with a policy of its own
    elif st.policy is not None:
        st.policy.prior = st.exit.agreement[st.levels.m].value


def flat_costs():
    from mlxspec.costs import CostModel

    return CostModel.default()
