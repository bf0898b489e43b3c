"""`mlxspec generate --verify early-exit` on model folders written to disk (the whole load
path): the output is plain output, and --json carries the early-exit counters."""
import json

from test_cli import folders, run  # noqa: F401 (fixture)


def test_generate_early_exit_is_lossless_with_its_counters(folders):  # noqa: F811
    full = 0
    for prompt in ("w40", "w10 w11 w12 w13", "w1 w2 w3"):
        args = ["generate", prompt, "-m", str(folders["target"]), "--no-chat-template", "-n", "32", "--json"]
        plain = json.loads(run(*args, "--draft", "none").stdout)
        for draft in (str(folders["draft"]), "lookup"):
            r = run(*args, "--draft", draft, "--verify", "early-exit")
            assert r.exit_code == 0, r.output
            spec = json.loads(r.stdout)
            assert spec["tokens"] == plain["tokens"], (prompt, draft)
            s = spec["stats"]
            assert s["verify"] == "early-exit"
            if s["rounds"]:
                assert {"intermediate_checked", "intermediate_rejected", "full_verifications", "draft_s",
                        "intermediate_s", "full_s", "exit_layer"} <= set(s)
                full += s["full_verifications"]
    assert full > 0
