"""`mlxspec bench --early-exit`: early-exit rows beside the single-level ones, checked
against plain decoding like them, with their counters in the table's notes and --json."""
import json

from test_bench import FAST, bench, folders, no_gflops, table  # noqa: F401 (fixtures)


def test_bench_early_exit_rows(folders, tmp_path):  # noqa: F811
    r = bench("-m", folders["target"], "--draft", folders["draft"], *FAST, "--temps", "0,0.7",
              "--methods", "draft (,early-exit", "--early-exit", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output + r.stderr
    rows = table(r.stdout)
    by = {(row[0], row[1]): row for row in rows[1:]}
    name = next(n for n, _ in by if n.startswith("mlxspec draft early-exit"))
    assert by[(name, "0")][8] == "yes"  # lossless: held to greedy == plain
    assert "mlxspec lookup early-exit" in {n for n, _ in by}
    assert f"{name} (temp 0): exit layer" in r.stdout and "tokens per full" in r.stdout
    doc = json.loads((tmp_path / "b.json").read_text())
    row = next(x for x in doc["rows"] if x["method"] == name and x["temp"] == 0)
    assert row["exact"] is True
    ee = row["early_exit"]
    assert ee["full_verifications"] + ee["single_level_rounds"] > 0
    assert set(ee) >= {"intermediate_checked", "intermediate_rejected", "tokens_per_full", "draft_share",
                       "intermediate_share", "full_share"}
    run = next(x for x in doc["runs"] if x["method"] == name)
    assert run["early_exit"]["exit_layer"] >= 1
