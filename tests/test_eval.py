"""The shipped quality check (mlxspec/eval): known answers are right, every code task's
tests pass a reference solution and fail a wrong one (in a subprocess, with a timeout),
answers are extracted from replies, and the runner reports each setting's row."""
import json

import pytest
from click.testing import CliRunner

import mlxspec.api
from mlxspec.cli.main import cli
from mlxspec.drafters.draft_model import ModelDrafter
from mlxspec.engine import Engine
from mlxspec.eval import arith, code
from mlxspec.eval.runner import Setting, run, table
from cli_check import assert_one_line_error
from tiny import CharTokenizer, perturbed_copy, tiny_model

REFERENCE = {
    "add": "def add(a, b):\n    return a + b",
    "is_even": "def is_even(n):\n    return n % 2 == 0",
    "reverse_string": "def reverse_string(s):\n    return s[::-1]",
    "factorial": "def factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)",
    "fibonacci": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "is_palindrome": "def is_palindrome(s):\n    return s == s[::-1]",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)",
    "max_of_list": "def max_of_list(xs):\n    m = xs[0]\n    for x in xs:\n        m = x if x > m else m\n    return m",
    "sum_of_squares": "def sum_of_squares(n):\n    return sum(i * i for i in range(n + 1))",
    "flatten": "def flatten(xss):\n    return [x for xs in xss for x in xs]",
    "unique": "def unique(xs):\n    return list(dict.fromkeys(xs))",
    "word_count": "def word_count(s):\n    return len(s.split())",
    "celsius_to_fahrenheit": "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32",
    "gcd": "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a",
    "is_prime": "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))",
    "capitalize_words": "def capitalize_words(s):\n    return ' '.join(w[:1].upper() + w[1:] for w in s.split(' '))",
    "second_largest": "def second_largest(xs):\n    return sorted(set(xs))[-2]",
    "chunk": "def chunk(xs, n):\n    return [xs[i:i + n] for i in range(0, len(xs), n)]",
    "run_length": "def run_length(s):\n    import itertools\n    return [(k, len(list(g))) for k, g in itertools.groupby(s)]",
    "binary_to_int": "def binary_to_int(s):\n    return int(s, 2)",
}


def test_every_code_task_passes_its_reference_and_fails_a_wrong_one():
    tasks = code.tasks()
    assert len(tasks) == 20 and {t.id[5:] for t in tasks} == set(REFERENCE)
    for t in tasks:
        ref = REFERENCE[t.id[5:]]
        assert code.passes(t, f"Here it is:\n```python\n{ref}\n```\nDone."), t.id
        name = t.id[5:]
        assert not code.passes(t, f"```python\ndef {name}(*a):\n    return None\n```"), t.id


def test_code_runs_with_a_timeout_and_isolated():
    t = code.tasks(1)[0]
    assert not code.passes(t, "def add(a, b):\n    while True:\n        pass", timeout_s=1.0)
    assert not code.passes(t, "import sys; sys.exit(0)")  # exits before the tests


def test_arithmetic_answers_are_right_and_extracted():
    ps = arith.problems(50, seed=0)
    assert len({p.prompt for p in ps}) == 50 and ps == arith.problems(50, seed=0) != arith.problems(50, seed=1)
    assert all(p.answer >= 0 for p in ps)
    p = ps[0]  # "... has a, buys b more and then gives c ...": a + b - c
    import re
    a, b, c = (int(x) for x in re.findall(r"\d+", p.prompt)[:3])
    assert p.answer == a + b - c
    assert arith.correct(p, f"So {a}+{b}={a + b}, minus {c}.\nAnswer: {p.answer}")
    assert arith.correct(p, f"The answer is **{p.answer}**.")
    assert not arith.correct(p, f"Answer: {p.answer + 1}") and not arith.correct(p, "no idea")
    assert arith.extract("Answer: 1,234") == 1234 and arith.extract(f"{p.answer} then 7") == 7


V = 64


@pytest.fixture(scope="module")
def engine():
    target = tiny_model(V, layers=2, hidden=32, scale=3.0)
    return Engine(target, CharTokenizer(V), ModelDrafter(perturbed_copy(target, 0.3, seed=5), V, min_confidence=0.0),
                  model_name="tiny", max_context=512, adaptive=False)


def test_runner_rows_side_by_side(engine):
    settings = [Setting(), Setting("relaxed", 0.7, 1.0), Setting("relaxed", 0.7, 0.0)]
    rows = run(engine, settings, [0.0, 0.8], 3, 2, 24)
    assert [(r["temp"], r["setting"]) for r in rows] == [
        (t, s) for t in (0.0, 0.8) for s in ("exact", "relaxed w=0.7 b=1", "relaxed w=0.7 b=0")]
    for r in rows:
        assert r["arith_n"] == 3 and r["code_n"] == 2 and len(r["replies"]) == 5 and r["tokens"] > 0
        assert r["drafted"] > 0 and 0 <= r["acceptance"] <= 1 and r["tps"] > 0
    exact, loose, zero = rows[:3]
    assert exact["relaxed_tokens"] == 0 and loose["relaxed_tokens"] > 0 and loose["tv_mean"] > 0
    assert [x["text"] for x in zero["replies"]] == [x["text"] for x in exact["replies"]]  # budget 0 = exact
    assert engine.verify_mode == "relaxed" and engine.drafter.greedy_q
    md = table(rows)
    assert md.count("\n") == 7 and "relaxed w=0.7 b=1" in md


def test_eval_cli(engine, monkeypatch, tmp_path):
    monkeypatch.setattr(mlxspec.api, "load", lambda model=None, draft="auto", **kw: engine)
    out = tmp_path / "eval.json"
    r = CliRunner().invoke(cli, ["eval", "--arith", "2", "--code", "1", "-n", "16", "--relax-weight", "0.5",
                                 "--relax-weight", "0.8", "--json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [x["setting"] for x in doc["rows"]] == ["exact", "relaxed w=0.5 b=0.3", "relaxed w=0.8 b=0.3"]
    assert "replies" not in doc["rows"][0] and len(json.loads(out.read_text())["rows"][0]["replies"]) == 3
    assert "eval exact T=0" in r.stderr  # progress on stderr


@pytest.mark.parametrize("args, message", [
    (["--verify", "exact", "--relax-weight", "0.5"], "need --verify relaxed"),
    (["--relax-weight", "1.5"], "relax weight"),
    (["--arith", "0", "--code", "0"], "nothing to evaluate"),
    (["--temp", "-1"], "temperature"),
])
def test_eval_bad_input_is_one_line(args, message):
    assert_one_line_error(CliRunner().invoke(cli, ["eval", *args]), message)


def test_eval_relaxed_pairs(engine, monkeypatch):
    monkeypatch.setattr(mlxspec.api, "load", lambda model=None, draft="auto", **kw: engine)
    r = CliRunner().invoke(cli, ["eval", "--arith", "1", "--code", "0", "-n", "8", "--relaxed", "0.3:0.2",
                                 "--relaxed", "0.6:1", "--json"])
    assert r.exit_code == 0, r.output
    assert [x["setting"] for x in json.loads(r.stdout)["rows"]] == ["exact", "relaxed w=0.3 b=0.2", "relaxed w=0.6 b=1"]
    assert_one_line_error(CliRunner().invoke(cli, ["eval", "--relaxed", "0.3"]), "WEIGHT:BUDGET")
