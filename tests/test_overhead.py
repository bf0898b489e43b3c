"""`mlxspec bench --overhead` (mlxspec/bench/overhead.py) on a tiny shape: every method
runs and is measured, greedy outputs agree with mlx-lm, the cost curve and the host
traffic are reported; bad shapes and dtypes are one line."""
import json

from click.testing import CliRunner

from cli_check import assert_one_line_error
from mlxspec.bench import overhead
from mlxspec.cli.main import cli

TINY = overhead.Shape("llama", 32, 2, 4, 2, 64, 300, head_dim=8)


def test_overhead_on_a_tiny_shape():
    (r,) = overhead.run(["tiny"], ["float32"], n=6, custom={"tiny": TINY})
    assert r.shape == "tiny" and r.dtype == "float32" and r.tokens == 6
    for rate in (r.mlx_lm_plain_tps, r.mlxspec_plain_tps, r.mlx_lm_spec_tps, r.mlxspec_spec_tps):
        assert rate > 0
    assert r.plain_ratio > 0 and r.spec_ratio > 0
    assert r.same_tokens  # float32: mlxspec plain and self-drafting give mlx-lm's greedy tokens
    assert list(r.cost_curve)[0] == "1" and r.cost_curve["1"] == 1.0 and len(r.cost_curve) > 2
    assert 0 < r.plain_bytes_per_token <= 8 and 0 < r.spec_bytes_per_token < 100  # ids, not rows
    assert r.plain_syncs_per_step == 1.0 and r.spec_syncs_per_round > 1  # the draft's steps read too
    text = overhead.format_table([r])
    assert text.splitlines()[0].startswith("shape") and "tiny" in text and "c(n)" in text


def test_real_shapes_are_the_published_ones():
    q, s = overhead.SHAPES["qwen1.5b"], overhead.SHAPES["smollm2"]
    assert (q.hidden, q.layers, q.heads, q.kv_heads, q.ffn, q.vocab, q.tied) == (1536, 28, 12, 2, 8960, 151936, True)
    assert (s.hidden, s.layers, s.heads, s.kv_heads, s.head_dim, s.ffn, s.vocab, s.tied) == \
        (576, 30, 9, 3, 64, 1536, 49152, True)


def test_cli_overhead_writes_json(monkeypatch, tmp_path):
    monkeypatch.setitem(overhead.SHAPES, "tiny", TINY)
    out = tmp_path / "o.json"
    r = CliRunner().invoke(cli, ["bench", "--overhead", "--shapes", "tiny", "--dtypes", "float32", "-n", "4",
                                 "--reps", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "tiny" in r.stdout and "mlx-lm plain" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["overhead"][0]["shape"] == "tiny" and doc["overhead"][0]["mlxspec_plain_tps"] > 0


def test_cli_overhead_bad_shape_or_dtype_is_one_line():
    for args, word in ((["--shapes", "nope"], "nope"), (["--dtypes", "int8"], "int8")):
        r = CliRunner().invoke(cli, ["bench", "--overhead", *args])
        assert_one_line_error(r, word)
