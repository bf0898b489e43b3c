"""python -m mlxspec.bench.serve_bench on tiny model folders (a smoke run; marked slow:
it starts four servers): every method ran every prompt, mlxspec serve's greedy text equals
generate's, and the table and the JSON are written."""
import json

import pytest

from mlxspec.bench import serve_bench
from tiny_folder import make_model_dir

pytestmark = pytest.mark.slow


def test_serve_bench_smoke(tmp_path, capsys):
    target = make_model_dir(tmp_path / "tiny")
    draft = make_model_dir(tmp_path / "draft", seed=1)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w3 w4 w5 w6\n\nw7 w8 w9\n")
    out = tmp_path / "bench.json"
    serve_bench.main(["-m", str(target), "--mlx-draft", str(draft), "--reps", "1", "-n", "12",
                      "--prompts", str(prompts), "--json", str(out)])
    doc = json.loads(out.read_text())
    assert doc["methods"] == ["mlxspec generate", "mlxspec serve", "mlxspec serve, draft none",
                              "mlx_lm.server plain", "mlx_lm.server + draft"]
    runs = doc["runs"]
    assert len(runs) == 5 * 2 and all(r["tokens"] > 0 for r in runs)
    ref = {r["prompt"]: r["text"] for r in runs if r["method"] == "mlxspec generate"}
    assert all(r["text"] == ref[r["prompt"]] for r in runs if r["method"].startswith("mlxspec serve"))
    table = capsys.readouterr().out
    assert "mlx_lm.server + draft" in table and "vs generate" in table
