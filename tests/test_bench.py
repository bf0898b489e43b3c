"""`mlxspec bench` on tiny model folders: the table, its "greedy == plain" column, the JSON
and CSV files, measured mlx-lm draft counts, --prompts files, progress, and Ctrl-C."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re

import pytest
from click.testing import CliRunner

import mlxspec.bench.runner as runner
import mlxspec.cli.bench_cmd as bench_cmd
import mlxspec.cli.doctor_cmd as doctor_cmd
from cli_check import assert_one_line_error
from mlxspec.bench.prompts import DEFAULT, load_prompts
from mlxspec.cli.main import cli
from test_cli import perturbed_folder
from tiny_folder import make_model_dir

HEAD = ["method", "temp", "tok/s", "speedup", "accept", "mean len", "peak GB", "draft MB", "greedy == plain",
        "host B/tok"]
FAST = ["-n", "12", "--reps", "1", "--no-warmup"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-models")
    target = make_model_dir(root / "target", seed=0)
    return {"target": target, "draft": perturbed_folder(target, root / "draft", noise=0.01)}


@pytest.fixture(autouse=True)
def no_gflops(monkeypatch):
    monkeypatch.setattr(doctor_cmd, "measure_gflops", lambda *a, **k: 123.0)  # doctor's own test measures


def bench(*args):
    return CliRunner().invoke(cli, ["bench", *map(str, args)])


def table(stdout: str) -> list[list[str]]:
    """Head and body rows of the table (cells are padded apart by two or more spaces)."""
    lines = stdout.splitlines()
    dash = next(i for i, ln in enumerate(lines) if ln.startswith("---"))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("speedup is against"))
    return [re.split(r"\s{2,}", ln) for ln in [lines[dash - 1]] + lines[dash + 1:end]]


@pytest.fixture(scope="module")
def full_run(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(doctor_cmd, "measure_gflops", lambda *a, **k: 123.0)
        r = bench("-m", folders["target"], "--draft", folders["draft"], *FAST, "--temps", "0,0.7",
                  "--json", out / "b.json", "--csv", out / "b.csv")
    return r, out


def test_table_has_a_row_per_method_and_temperature(full_run):
    r, _ = full_run
    assert r.exit_code == 0, r.output
    rows = table(r.stdout)
    assert rows[0] == HEAD
    methods = [row[0] for row in rows[1:] if row[1] == "0"]
    # the baselines first, then at least the separate-draft pair (more drafters may follow)
    assert methods[:2] == ["mlx-lm plain", "mlxspec plain"]
    assert {"mlx-lm spec (draft, k=4)", "mlxspec draft (draft)"} <= set(methods)
    assert [(row[0], row[1]) for row in rows[1:]] == [(m, t) for t in ("0", "0.7") for m in methods]
    for row in rows[1:]:
        greedy = row[1] == "0"
        assert row[8] == ("yes" if greedy else "n/a"), row
        if row[0].endswith(" plain"):
            assert row[4] == row[5] == row[7] == "-", row  # no drafts, no draft memory
        if row[0] == "mlx-lm spec (draft, k=4)" or (row[0] == "mlxspec draft (draft)" and greedy):
            assert row[4].endswith("%") and row[7] != "-", row  # the draft model drafted; its size
        if row[0] == "mlxspec draft (draft)":
            # a draft model as large as its target is tried, timed at about a target step and
            # then not used again: the sampled governor starts from that measured cost
            assert row[7] != "-", row
        assert row[2].count("±") == 1 and row[3].endswith("x")
        # mlxspec reads ids and a few probabilities per token, not rows of the vocabulary
        assert (0 < float(row[9]) < 200) if row[0].startswith("mlxspec") else row[9] == "-", row
    assert rows[1][3] == "1.00x"  # the baseline against itself
    assert "model target" in r.stdout.splitlines()[0] and "123.0 GFLOP/s" in r.stdout


def test_progress_and_eta_on_stderr(full_run):
    r, _ = full_run
    n = 2 * 3 * (len(table(r.stdout)) - 1) // 2  # temps x prompts x methods
    assert f"[1/{n} ETA ?] mlx-lm plain · prompt code · temp 0 · rep 1/1" in r.stderr
    assert f"[{n}/{n} ETA " in r.stderr and "mlxspec draft (draft) · prompt qa · temp 0.7 · rep 1/1" in r.stderr
    assert f"[{n + 1}/" not in r.stderr and "ETA" not in r.stdout


def test_eta_formatting():
    assert bench_cmd._eta(0, 5, 0.0) == "ETA ?"
    assert bench_cmd._eta(2, 4, 10.0) == "ETA 10s"
    assert bench_cmd._eta(1, 2, 119.6) == "ETA 2m00s"  # not "1m60s"
    assert bench_cmd._eta(1, 100, 60.0) == "ETA 99m00s"


def test_json_and_csv_hold_the_table_and_every_run(full_run):
    r, out = full_run
    doc = json.loads((out / "b.json").read_text())
    fields = [f.name for f in dataclasses.fields(runner.Row)]
    n_methods = len({row["method"] for row in doc["rows"]})
    assert n_methods >= 4 and len(doc["rows"]) == 2 * n_methods and all(list(row) == fields for row in doc["rows"])
    assert len(doc["runs"]) == 2 * 3 * n_methods  # temps x prompts x methods, one rep
    assert doc["settings"]["prompt_names"] == list(DEFAULT) and doc["settings"]["temps"] == [0.0, 0.7]
    assert doc["machine"]["matmul_gflops_f32_1024"] == 123.0
    for row in doc["rows"]:
        assert row["exact"] is (True if row["temp"] == 0 else None)
        assert row["runs"] == 3
        mine = [x for x in doc["runs"] if x["method"] == row["method"] and x["temp"] == row["temp"]]
        assert len(mine) == 3 and all(len(x["tokens"]) <= 12 for x in mine)
        if row["acceptance"] is not None:
            acc = sum(x["accepted"] or 0 for x in mine) / sum(x["drafted"] or 0 for x in mine)  # None: no rounds
            assert row["acceptance"] == pytest.approx(acc) and 0 < acc <= 1
    table_rows = table(r.stdout)[1:]
    for row, shown in zip(doc["rows"], table_rows):
        assert shown[0] == row["method"] and shown[2].startswith(f"{row['tps_mean']:.2f}")
    parsed = list(csv.reader(io.StringIO((out / "b.csv").read_text())))
    assert parsed[0] == fields and len(parsed) == 1 + len(doc["rows"])
    for line, row in zip(parsed[1:], doc["rows"]):
        assert line[0] == row["method"] and float(line[1]) == row["temp"]
        assert float(line[2]) == pytest.approx(row["tps_mean"]) and line[fields.index("exact")] == {True: "True", None: ""}[row["exact"]]


def test_a_method_that_changes_the_output_is_reported_and_fails(folders, monkeypatch, tmp_path):
    """Control for the "greedy == plain" column: a broken method (one token changed) is NO."""
    real = bench_cmd.build_methods

    def with_broken(target, *a, **kw):
        methods = real(target, *a, **kw)
        plain = next(m for m in methods if m.name == "mlxspec plain")

        def stream(prompt, temp, max_tokens, seed):
            for i, r in enumerate(plain.stream(prompt, temp, max_tokens, seed)):
                yield dataclasses.replace(r, token=(r.token + 1) % 64) if i == 3 else r

        return methods + [runner.Method("broken", stream, "mlxspec")]

    monkeypatch.setattr(bench_cmd, "build_methods", with_broken)
    r = bench("-m", folders["target"], "--draft", "none", *FAST, "--temps", "0", "--json", tmp_path / "b.json")
    assert r.exit_code == 2 and "differed from plain decoding" in r.stderr
    rows = {row[0]: row for row in table(r.stdout)[1:]}
    assert rows["broken"][8] == "NO" and rows["mlxspec plain"][8] == "yes" and rows["mlx-lm plain"][8] == "yes"
    exact = {row["method"]: row["exact"] for row in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert exact["broken"] is False and exact["mlxspec plain"] is True and exact["mlx-lm plain"] is True
    assert [m for m, ok in exact.items() if ok is False] == ["broken"]  # every other method is lossless


def test_summary_numbers():
    """speedup against the baseline, acceptance, mean length, and EOS-insensitive exactness."""
    m = [runner.Method(n, None, "mlxspec") for n in ("base", "ref", "spec")]
    R = runner.Run
    runs = [R("base", "a", 0.0, [5, 6, 9, 1], 10.0, 0.1), R("base", "b", 0.0, [5], 20.0, 0.1),
            R("ref", "a", 0.0, [5, 6, 9], 15.0, 0.2), R("ref", "b", 0.0, [5], 15.0, 0.2),
            R("spec", "a", 0.0, [5, 6, 9, 1, 7], 30.0, 0.5, drafted=8, accepted=6, rounds=2),
            R("spec", "b", 0.0, [5, 7], 30.0, 0.3, drafted=2, accepted=0, rounds=1)]
    rows = {r.method: r for r in runner.summarize(runs, m, baseline="base", reference="ref", eos={1})}
    assert rows["base"].speedup == 1.0 and rows["spec"].speedup == 2.0
    assert rows["spec"].acceptance == 0.6 and rows["spec"].mean_accepted_length == 3.0  # (6 + 3) / 3
    assert rows["spec"].peak_gb == 0.5 and rows["ref"].acceptance is None
    assert rows["base"].exact is True  # differs from ref only after EOS
    assert rows["spec"].exact is False  # prompt b: [5, 7] != [5]
    text = runner.format_table(list(rows.values()), "base")
    assert "60%" in text and "NO" in text and "speedup is against base" in text


def test_per_prompt_ratios_pair_repetitions_and_name_prompts_below_plain(full_run):
    """Each method against mlxspec plain prompt by prompt, repetitions paired: the mean
    over prompts hides a prompt below plain. Control: a method at plain speed on every
    prompt is not flagged, one below on one prompt is named."""
    from mlxspec.bench import per_prompt

    R = runner.Run
    runs = [R("mlxspec plain", "a", 0.0, [1], 10.0, 0.1), R("mlxspec x", "a", 0.0, [1], 20.0, 0.1),
            R("mlxspec y", "a", 0.0, [1], 10.0, 0.1), R("mlxspec plain", "b", 0.0, [1], 10.0, 0.1),
            R("mlxspec x", "b", 0.0, [1], 9.0, 0.1), R("mlxspec y", "b", 0.0, [1], 10.0, 0.1),
            R("mlxspec plain", "a", 0.0, [1], 5.0, 0.1), R("mlxspec x", "a", 0.0, [1], 5.0, 0.1)]  # rep 2 of a
    table = per_prompt.ratios(runs)
    assert table[(0.0, "a")]["mlxspec x"] == (pytest.approx(25 / 15), pytest.approx(1.0))  # mean ratio, lowest rep
    assert table[(0.0, "b")]["mlxspec x"] == (pytest.approx(0.9), pytest.approx(0.9))
    text = per_prompt.format_ratios(table, ["mlxspec plain", "mlxspec x", "mlxspec y"])
    assert text.splitlines()[-1] == "below 0.97x of plain: mlxspec x on b at T=0 (0.90)"
    assert "1.67 (1.00)" in text and not any(ln.startswith("mlxspec plain") for ln in text.splitlines())
    r, out = full_run  # in the bench's own output and JSON
    assert "per prompt, against mlxspec plain" in r.stdout and "below 0.97x of plain:" in r.stdout
    doc = json.loads((out / "b.json").read_text())
    cells = {(c["temp"], c["prompt"], c["method"]) for c in doc["per_prompt"]}
    assert (0.0, "qa", "mlxspec draft (draft)") in cells and not any(m == "mlxspec plain" for _, _, m in cells)


def _mlx_lm_reference(from_draft: list[bool], k: int, max_tokens: int) -> tuple[int, int]:
    """What mlx-lm's speculative loop drafted, rebuilt from the kept tokens' flags
    (valid when generation ran to max_tokens): each round drafts min(k, tokens left),
    yields the accepted prefix, then the target's own token unless max_tokens was hit."""
    drafted = rounds = ntoks = i = 0
    while ntoks < max_tokens:
        nd = min(k, max_tokens - ntoks)
        rounds += 1
        drafted += nd
        n = 0
        while n < nd and i < len(from_draft) and from_draft[i]:
            n, i, ntoks = n + 1, i + 1, ntoks + 1
        if ntoks < max_tokens:
            assert not from_draft[i]
            i, ntoks = i + 1, ntoks + 1
    return drafted, rounds


@pytest.mark.parametrize("draft_kind", ["self", "perturbed"])
def test_mlx_lm_draft_counts_are_measured(folders, draft_kind):
    """Not rounds x k: with the model as its own draft every proposal is kept (10 of 10
    for 12 tokens at k=4: rounds draft 4, 4, 2); the old estimate said 9 of 8."""
    from mlxspec.loading import load_model

    target = load_model(str(folders["target"]))
    draft = target if draft_kind == "self" else load_model(str(folders["draft"]))
    method = runner.mlx_lm_method("spec", target.model, target.tokenizer, draft.model, num_draft=4)
    prompt = target.tokenizer.encode("w10 w11 w12 w13")
    items = list(method.stream(prompt, 0.0, 12, 0))
    assert len(items) == 12  # ran to max_tokens: the reference below applies
    run = runner.run_once(method, prompt, "p", 0.0, 12, 0)
    flags = [r.from_draft for r in items]
    assert run.accepted == sum(flags)
    assert (run.drafted, run.rounds) == _mlx_lm_reference(flags, 4, 12)
    if draft_kind == "self":
        assert run.drafted == run.accepted == 10 and run.rounds == 3
    else:
        assert 0 < run.accepted < run.drafted


# -- --prompts FILE|DIR ------------------------------------------------------------------
def test_prompts_from_a_folder_a_text_file_and_jsonl(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "b-sql.txt").write_text("Write a SQL query.\n\nWith a join.\n")
    (d / "a-chat.json").write_text(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                                            {"role": "user", "content": "Hi"}]}))
    (d / ".hidden").write_text("ignored")
    assert load_prompts(str(d)) == {
        "a-chat": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "b-sql": [{"role": "user", "content": "Write a SQL query.\n\nWith a join."}]}
    t = tmp_path / "p.txt"
    t.write_text("first prompt\nsecond line\n\n  \n\nsecond prompt\r\n")
    assert load_prompts(str(t)) == {"p-1": [{"role": "user", "content": "first prompt\nsecond line"}],
                                    "p-2": [{"role": "user", "content": "second prompt"}]}
    j = tmp_path / "c.jsonl"
    j.write_text(json.dumps({"name": "greet", "messages": [{"role": "user", "content": "hello"}]}) + "\n\n"
                 + json.dumps([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                               {"role": "user", "content": "c"}]) + "\n")
    got = load_prompts(str(j))
    assert list(got) == ["greet", "c-2"] and [m["content"] for m in got["c-2"]] == ["a", "b", "c"]
    assert load_prompts("topic-switch") == load_prompts("topic-switch") and "code->legal" in load_prompts(
        "topic-switch")


def test_bench_runs_the_users_prompts(folders, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "one.txt").write_text("w3 w4 w5")
    (d / "two.txt").write_text("w7 w8")
    r = bench("-m", folders["target"], "--draft", "none", "-n", "4", "--reps", "1", "--no-warmup",
              "--temps", "0", "--prompts", d, "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["settings"]["prompt_names"] == ["one", "two"]
    assert {x["prompt"] for x in doc["runs"]} == {"one", "two"} and "(one, two)" in r.stdout
    assert "prompt two · temp 0 · rep 1/1" in r.stderr


def _bad(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, dict):
        p.mkdir()
        for k, v in content.items():
            (p / k).write_bytes(v if isinstance(v, bytes) else v.encode())
    else:
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"messages": [{"role": "user", "content": "ok"}]}\n{not json\n', "bad.jsonl line 2: not JSON"),
    ("bad.jsonl", '{"messages": [{"content": "no role"}]}\n', "bad.jsonl line 1: message 1 needs a role"),
    ("bad.jsonl", '{"messages": []}\n', "non-empty list of messages"),
    ("bad.jsonl", '"just a string"\n', "bad.jsonl line 1: expected"),
    ("bad.jsonl", '{"name": "x", "messages": [{"role": "user", "content": "a"}]}\n'
                  '{"name": "x", "messages": [{"role": "user", "content": "b"}]}\n', "used twice"),
    ("empty.txt", "\n\n  \n", "no prompts found"),
    ("latin1.txt", b"caf\xe9\n", "latin1.txt: not UTF-8 text"),
    ("dir", {"a.txt": ""}, "a.txt: the prompt file is empty"),
    ("dir", {"a.json": "[1, 2"}, "a.json: not JSON"),
    ("dir", {"a.json": '[{"role": "robot", "content": "x"}]'}, "a.json: message 1 needs a role"),
    ("dir", {}, "no prompts found"),
])
def test_a_bad_prompts_file_is_one_line(folders, tmp_path, name, content, message):
    path = _bad(tmp_path, name, content)
    r = bench("-m", folders["target"], "--draft", "none", "--prompts", path)
    assert_one_line_error(r, message)


def test_unknown_prompts_is_one_line(folders):
    assert_one_line_error(bench("-m", folders["target"], "--prompts", "/no/such/prompts"), "no such file or folder")


@pytest.mark.parametrize("args, message", [
    (["--temps", "0,x"], "--temps must be a comma list"),
    (["--temps", "-1"], "temperatures >= 0"),
    (["-n", "1"], "--max-tokens >= 2"),
    (["--reps", "0"], "--reps >= 1"),
    (["--reps", "two"], "'two' is not a valid integer"),
])
def test_bad_settings_are_one_line(folders, args, message):
    assert_one_line_error(bench("-m", folders["target"], *args), message)


def test_ctrl_c_keeps_the_previous_results(folders, tmp_path, monkeypatch):
    old_json, old_csv = tmp_path / "b.json", tmp_path / "b.csv"
    old_json.write_text('{"old": true}')
    old_csv.write_text("old,table\n")
    real, calls = runner.run_once, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(runner, "run_once", interrupted)
    r = bench("-m", folders["target"], "--draft", "none", *FAST, "--temps", "0",
              "--json", old_json, "--csv", old_csv)
    assert r.exit_code == 130 and "Interrupted" in r.stderr and len(calls) == 3
    assert old_json.read_text() == '{"old": true}' and old_csv.read_text() == "old,table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "b.json"]  # no temp files left


def test_use_session_names_an_unknown_model_in_one_line():
    from mlxspec.bench import use_session

    with pytest.raises(SystemExit) as exc:
        use_session.main(["-m", "no-such-model-anywhere"])
    msg = str(exc.value.code)
    assert msg.startswith("error: ") and "no-such-model-anywhere" in msg and "\n" not in msg
