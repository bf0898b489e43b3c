"""`mlxspec serve` on the real smollm2-135m (pulled by `make test`), through the `openai`
client: greedy chat and completions equal `mlxspec generate` on the same prompt and
options, the usage extension adds up, and a follow-up chat turn prefills only its new
tokens (the turn before it and its reply come from the engine's cache)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import REPO
from mlxspec.cli.main import cli
from serve_proc import Server

MODEL = "smollm2-135m-instruct"
MODEL_DIR = REPO / "models" / MODEL
pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not (MODEL_DIR / "config.json").exists(), reason="smollm2-135m-instruct not pulled"),
]
N = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # lookup drafts: no head of the shared model folder is started or trained by the test
    s = Server(["-m", MODEL, "--draft", "lookup", "-n", str(N)], tmp_path_factory.mktemp("log") / "stderr.txt")
    try:
        yield s.start()
    finally:
        s.stop()


def generate(prompt, *args) -> dict:
    r = CliRunner().invoke(cli, ["generate", "-m", MODEL, "--draft", "lookup", "--json", "-n", str(N), *args, prompt])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_greedy_chat_and_completions_equal_generate(server):
    client = server.client()
    prompt = "Name three primary colours."
    ref = generate(prompt)
    msgs = [{"role": "user", "content": prompt}]
    whole = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=N, temperature=0)
    assert whole.choices[0].message.content == ref["text"]
    assert whole.usage.prompt_tokens == ref["prompt_tokens"] and whole.usage.completion_tokens == ref["generation_tokens"]
    streamed = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=N, temperature=0, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ref["text"]
    x = chunks[-1].usage.model_extra["mlxspec"]
    assert x["drafter"] == "lookup" and x["accepted"] <= x["drafted"]
    assert x["prompt_tokens_prefilled"] <= 1  # the same prompt again: all of it cached
    text = "def fibonacci(n):\n    "
    ref = generate(text, "--no-chat-template")
    r = client.completions.create(model=MODEL, prompt=text, max_tokens=N, temperature=0)
    assert r.choices[0].text == ref["text"] and r.usage.completion_tokens == ref["generation_tokens"]


def test_a_follow_up_turn_prefills_only_its_new_tokens(server):
    client = server.client()
    msgs = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is the capital of Italy?"}]
    r1 = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=N, temperature=0)
    msgs += [{"role": "assistant", "content": r1.choices[0].message.content},
             {"role": "user", "content": "And of Spain?"}]
    r2 = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=N, temperature=0)
    u1, u2 = r1.usage, r2.usage
    new = u2.prompt_tokens - u1.prompt_tokens - u1.completion_tokens  # the new turn's tokens, about
    ran = u2.model_extra["mlxspec"]["prompt_tokens_prefilled"]
    assert 0 < ran <= new + 4, (ran, new, u1, u2)  # a server that re-prefilled would run all of u2's prompt
    assert u2.prompt_tokens_details.cached_tokens == u2.prompt_tokens - ran >= u1.prompt_tokens


def test_the_readme_client_example_runs(server):
    text = (REPO / "README.md").read_text().split("### Server (`mlxspec serve`)", 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    code = blocks[0].replace("http://127.0.0.1:8080", server.url)
    code = re.sub(r"max_tokens=\d+", f"max_tokens={N}", code)  # the stream is capped by the server's -n
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    reply, rate, haiku = re.fullmatch(r"(.+) ([01]\.\d+)\n(.*)", out.stdout, re.S).groups()
    assert reply.strip() and 0 <= float(rate) <= 1 and haiku.strip(), out.stdout
