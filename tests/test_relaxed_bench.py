"""`mlxspec bench --relaxed W:B`: relaxed rows beside the exact ones, with what relaxation
cost; a relaxed row is not held to "greedy == plain" (n/a), the exact rows still are."""
import json

from test_bench import FAST, HEAD, bench, folders, no_gflops, table  # noqa: F401 (fixtures)
from cli_check import assert_one_line_error


def test_bench_relaxed_rows(folders, tmp_path):  # noqa: F811
    r = bench("-m", folders["target"], "--draft", folders["draft"], *FAST, "--temps", "0",
              "--methods", "draft (,relaxed", "--relaxed", "0.7:1", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output + r.stderr
    rows = table(r.stdout)
    assert rows[0] == HEAD + ["relaxed tok", "mean TV"]
    by = {row[0]: row for row in rows[1:]}
    name = next(n for n in by if "relaxed w=0.7 b=1" in n)
    assert by[name][8] == "n/a" and by["mlxspec plain"][8] == "yes" and by["mlxspec plain"][10] == "-"
    assert int(by[name][10]) >= 0 and float(by[name][11]) >= 0
    doc = json.loads((tmp_path / "b.json").read_text())
    row = next(x for x in doc["rows"] if x["method"] == name)
    assert row["exact"] is None and row["relaxed_tokens"] is not None
    run = next(x for x in doc["runs"] if x["method"] == name)
    assert run["relax_checked"] > 0


def test_bench_bad_relaxed_is_one_line(folders):  # noqa: F811
    assert_one_line_error(bench("-m", folders["target"], *FAST, "--relaxed", "2:0.5"), "relax weight")
    assert_one_line_error(bench("-m", folders["target"], *FAST, "--relaxed", "x"), "WEIGHT:BUDGET")
