"""StateBuffer: cap and eviction (with the replay reservoir), label alignment with the
verified token stream (rejected drafts never committed, the last row of a call labelled
by the next token), against the target's true states through the real engine."""
import mlx.core as mx
import numpy as np
import pytest

from mlxspec.adapt.buffer import StateBuffer, TokenCounts
from mlxspec.drafters.head import HeadDrafter
from mlxspec.engine import Engine
from mlxspec.head.model import new_head
from mlxspec.runtime.layered import LayeredModel
from mlxspec.sampling import SamplingParams
from tiny import CharTokenizer, tiny_model

V = 64


class Recording(HeadDrafter):
    """What the wiring will do: the runner's recorder hook + the verified token stream."""

    def __init__(self, *a, buffer=None, **kw):
        super().__init__(*a, **kw)
        self.buffer = buffer

    def make_runner(self, model):
        r = super().make_runner(model)
        r.recorder = self.buffer.record
        return r

    def reset(self, tokens, runner):
        super().reset(tokens, runner)
        self.buffer.reset_tokens(tokens)

    def extend(self, tokens):
        super().extend(tokens)
        self.buffer.extend_tokens(tokens)


def states(d, n, start=0):
    """(1, n, d) arrays whose every entry is its position (so rows name themselves)."""
    x = mx.broadcast_to(mx.arange(start, start + n, dtype=mx.float32)[None, :, None], (1, n, d))
    return x, -x


def rows_by_pos(buf):
    out = {}
    for c in buf.chunks:
        for i in range(c.n):
            out.setdefault(c.pos + i, []).append((int(c.tokens[i]), int(c.labels[i]), float(c.hk[i, 0]),
                                                  float(c.hn[i, 0]), bool(c.reply[i])))
    return out


def test_labels_wait_for_the_next_token_and_rejected_drafts_are_dropped():
    buf = StateBuffer()
    buf.record(0, *states(4, 5))  # prefill of a 5-token prompt
    assert len(buf) == 0 and buf.pending_rows == 5
    buf.reset_tokens([10, 11, 12, 13, 14, 20])  # prompt + first reply token
    r = rows_by_pos(buf)
    assert sorted(r) == [0, 1, 2, 3, 4]
    assert [r[p][0][:2] for p in range(5)] == [(10, 11), (11, 12), (12, 13), (13, 14), (14, 20)]
    assert [r[p][0][4] for p in range(5)] == [False] * 4 + [True]  # only the last label is a reply token
    buf.record(5, *states(4, 1, 5))  # a plain step on token 20: its label is not known yet
    assert len(buf) == 5 and buf.pending_rows == 1
    buf.extend_tokens([21])
    assert len(buf) == 6 and rows_by_pos(buf)[5][0][:2] == (20, 21)
    # a chain round: root 21 at 6 and drafts 30, 31, 32 at 7..9; 30 kept, then 22
    buf.record(6, *states(4, 4, 6))
    buf.extend_tokens([30, 22])
    r = rows_by_pos(buf)
    assert sorted(r) == list(range(8)) and r[7][0][:2] == (30, 22)
    assert buf.pending_rows == 2  # the rejected drafts' rows at 8, 9 are never labelled
    buf.record(8, *states(4, 2, 108))  # the next round rewrites position 8 (root 22) and 9
    buf.extend_tokens([23])
    r = rows_by_pos(buf)
    assert r[8] == [(22, 23, 108.0, -108.0, True)] and 9 not in r
    # the boundary between calls: the next reply continues the conversation
    buf.record(9, *states(4, 3, 9))  # prefill of [23, 40, 41]
    buf.reset_tokens([10, 11, 12, 13, 14, 20, 21, 30, 22, 23, 40, 41, 50], prompt_len=12)
    r = rows_by_pos(buf)
    assert sorted(r) == list(range(12)) and all(len(v) == 1 for v in r.values())
    assert [r[p][0][:2] for p in (9, 10, 11)] == [(23, 40), (40, 41), (41, 50)]
    assert [r[p][0][2] for p in (9, 10, 11)] == [9.0, 10.0, 11.0]


def test_a_new_context_starts_new_chunks_and_drops_stale_pending():
    buf = StateBuffer()
    buf.record(0, *states(4, 4))
    buf.reset_tokens([1, 2, 3, 4, 5])
    buf.record(4, *states(4, 3, 4))  # a draft round whose drafts are all rejected
    buf.extend_tokens([6])
    assert len(buf) == 5 and buf.pending_rows == 2
    # another prompt sharing 2 tokens: the engine prefills from position 2
    buf.record(2, *states(4, 2, 202))
    buf.reset_tokens([1, 2, 7, 8, 9])
    chunks = buf.chunks
    # rows 2, 3 of the new context (row 1's state is the same in both: not recomputed,
    # its old row keeps it); the old context's rows stay, in their own chunk
    assert [(c.pos, c.n) for c in chunks] == [(0, 5), (2, 2)]
    assert chunks[1].tokens[:2].tolist() == [7, 8] and chunks[1].labels[:2].tolist() == [8, 9]
    assert float(chunks[1].hk[0, 0]) == 202.0 and chunks[1].ctx != chunks[0].ctx
    assert buf.pending_rows == 0


def test_cap_and_eviction_with_reservoir():
    d, chunk = 64, 16
    row = 2 * 2 * d + 9
    cap = row * chunk * 10  # ten chunks
    buf = StateBuffer(cap_bytes=cap, replay_fraction=0.3, chunk=chunk, seed=1)
    seq = [0]
    for r in range(40):  # 40 replies of one chunk each, one context
        start = len(seq) - 1
        buf.record(start, *states(d, chunk, start))
        toks = list(range(start + 1, start + 1 + chunk))
        if r == 0:
            buf.reset_tokens(seq + toks[:1])
            buf.extend_tokens(toks[1:])
        else:
            buf.extend_tokens(toks)
        seq += toks
        assert buf.nbytes <= cap
    assert buf.capacity_chunks == 10 and len(buf.chunks) == 10
    assert buf.summary()["reservoir_chunks"] == 3
    serials = sorted(c.serial for c in buf.chunks)
    assert serials[-7:] == list(range(33, 40))  # the newest 7 are the recent part, oldest out first
    assert all(s < 33 for s in serials[:3])  # the reservoir keeps older history
    assert buf.rows_seen == 40 * chunk and buf.nbytes == 10 * chunk * row
    # the default cap is 64 MiB
    assert StateBuffer().cap_bytes == 64 << 20


def test_token_counts_decay_and_rerank():
    c = TokenCounts(10, half_life=4)
    c.add([3])
    c.add([5] * 4)
    v = c.values()
    assert v[3] == pytest.approx(0.5) and v[5] == pytest.approx(1 + 0.5 ** 0.25 + 0.5 ** 0.5 + 0.5 ** 0.75)
    c.add([7] * 10_000)  # rescaling keeps the values finite and right
    assert np.isfinite(c.values()).all() and c.values()[7] == pytest.approx(1 / (1 - 0.5 ** 0.25), rel=1e-6)
    assert c.rerank([0, 1, 2, 5, 7, 9], size=4, always=[9]).tolist() == [9, 7, 0, 1, 2, 5]


@pytest.mark.parametrize("width", [1, 2])  # chains; chains + runner-up leaves (trees)
def test_engine_rows_are_the_targets_states_of_the_verified_tokens(width):
    model = tiny_model(V, layers=4, hidden=32, seed=0, scale=3.0)
    buf = StateBuffer()
    d = Recording(model, new_head(model, 1), core_ids=list(range(V)), vocab_mode="static",
                  min_confidence=0.0, tree_width=width, buffer=buf)
    eng = Engine(model, CharTokenizer(V), d, num_draft=4, draft_name="h", adaptive=False)
    prompt = [5, 9, 2, 7, 1, 3]
    out = [r.token for r in eng.stream(prompt, SamplingParams(), max_tokens=40)]
    stats = list(eng.stream(prompt + out + [4, 8], SamplingParams(), max_tokens=30))
    seq = prompt + out + [4, 8] + [r.token for r in stats]
    st = stats[-1].stats
    assert st.rounds > 0 and st.drafted > st.accepted  # some drafts were rejected
    lm = LayeredModel(model)
    x = mx.array([seq])
    h_k = lm.run_layers(lm.embed(x), 0, 1, None, mask="causal")
    hn = lm.norm(lm.run_layers(h_k, 1, lm.num_layers, None, mask="causal"))
    r = rows_by_pos(buf)
    assert sorted(r) == list(range(len(seq) - 1))  # every verified position once, labelled
    for c in buf.chunks:
        p, n = c.pos, c.n
        assert c.tokens[:n].tolist() == seq[p : p + n] and c.labels[:n].tolist() == seq[p + 1 : p + 1 + n]
        np.testing.assert_allclose(c.hk[:n].astype(np.float32), np.array(h_k[0, p : p + n]), atol=2e-2, rtol=1e-2)
        np.testing.assert_allclose(c.hn[:n].astype(np.float32), np.array(hn[0, p : p + n]), atol=2e-2, rtol=1e-2)
    assert buf.tokens_seen == len(out) + len(stats)


def test_states_recorded_before_a_token_feed_never_label_a_later_reply():
    # a runner that did not record this reply's prefill (another runner, a reset engine):
    # the rejected drafts' states still pending at 5, 6 must not be committed as rows of
    # the new reply's tokens
    buf = StateBuffer()
    buf.record(0, *states(4, 4))
    buf.reset_tokens([1, 2, 3, 4, 5])
    buf.record(4, *states(4, 3, 4))
    buf.extend_tokens([6])
    buf.reset_tokens([1, 2, 3, 4, 5, 6, 7, 8])
    assert sorted(rows_by_pos(buf)) == [0, 1, 2, 3, 4] and buf.pending_rows == 0
