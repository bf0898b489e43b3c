"""`mlxspec serve` as a real process on a loopback port, driven by the official `openai`
client, on the tiny model folder: streamed and whole answers equal `mlxspec generate`,
the usage extension adds up, a follow-up prefills only its new tokens, bad requests are
OpenAI error objects, the API key and CORS, and Ctrl-C stops it cleanly."""
from __future__ import annotations

import json
import urllib.request

import openai
import pytest
from click.testing import CliRunner

from mlxspec.cli.main import cli
from serve_proc import Server, tiny_words
from tiny_folder import make_model_dir

PROMPT = "w3 w4 w5 w3 w4 w9"
REPEATS = "w3 w4 w5 w3 w4"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def server(folder, tmp_path_factory):
    s = Server(["-m", folder], tmp_path_factory.mktemp("log") / "stderr.txt")
    try:
        yield s.start()
    finally:
        s.stop()


def generate(folder, prompt, *args) -> dict:
    r = CliRunner().invoke(cli, ["generate", "-m", str(folder), "--json", *args, prompt])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def ext(usage) -> dict:
    return usage.model_extra["mlxspec"] if hasattr(usage, "model_extra") else usage["mlxspec"]


def test_completions_equal_generate_streamed_and_whole(server, folder):
    ref = generate(folder, PROMPT, "--no-chat-template", "-n", "24")
    client = server.client()
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0)
    assert whole.choices[0].text == ref["text"] and whole.choices[0].finish_reason == ref["finish_reason"]
    assert whole.usage.prompt_tokens == ref["prompt_tokens"]
    assert whole.usage.completion_tokens == ref["generation_tokens"] == 24
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref["text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24


def test_chat_equals_generate_streamed_and_whole(server, folder):
    ref = generate(folder, PROMPT, "-n", "20")
    client = server.client()
    msgs = [{"role": "user", "content": PROMPT}]
    whole = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=20, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == ref["text"]
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_completion_tokens=20,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref["text"]
    assert chunks[-1].choices[0].finish_reason == ref["finish_reason"]
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage chunk


def test_usage_extension_is_present_and_consistent(server, folder):
    # the tiny model repeats itself after this prompt: prompt lookup drafts and its drafts are kept
    r = server.client().completions.create(model="tiny", prompt=REPEATS, max_tokens=40, temperature=0)
    u, x = r.usage, ext(r.usage)
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens and 0 < u.completion_tokens <= 40
    assert x["drafter"] == "lookup" and x["verify"] == "exact"
    assert x["rounds"] > 0 and 0 < x["accepted"] <= x["drafted"], x
    assert x["acceptance_rate"] == round(x["accepted"] / x["drafted"], 4)
    assert x["mean_accepted_length"] == round((x["accepted"] + x["rounds"]) / x["rounds"], 3)
    # every token came from a round (accepted drafts + one each) or a plain step (or the prefill's)
    assert x["accepted"] + x["rounds"] + x["plain_steps"] + 1 == u.completion_tokens
    assert x["generation_tps"] > 0 and x["time_to_first_token_s"] >= 0
    assert u.prompt_tokens_details.cached_tokens == u.prompt_tokens - x["prompt_tokens_prefilled"]
    plain = server.client().completions.create(model="tiny", prompt=REPEATS, max_tokens=40, temperature=0,
                                               extra_body={"draft": "none"})
    assert plain.choices[0].text == r.choices[0].text and ext(plain.usage)["drafted"] == 0
    assert ext(plain.usage)["drafter"] == "plain"


def test_a_follow_up_prefills_only_its_new_tokens(server):
    client = server.client()
    first = tiny_words(30, seed=1)
    r1 = client.completions.create(model="tiny", prompt=first, max_tokens=10, temperature=0)
    assert r1.choices[0].finish_reason == "length"  # ten tokens, none of them the end token
    assert ext(r1.usage)["prompt_tokens_prefilled"] == r1.usage.prompt_tokens == 30  # nothing cached yet
    follow = first + " " + r1.choices[0].text + " " + tiny_words(7, seed=2)
    r2 = client.completions.create(model="tiny", prompt=follow, max_tokens=10, temperature=0)
    assert r2.usage.prompt_tokens == 30 + 10 + 7 and r2.choices[0].finish_reason == "length"
    # the cache holds the prompt and the reply but its last token (fed with the next step)
    assert ext(r2.usage)["prompt_tokens_prefilled"] == 8, ext(r2.usage)
    assert r2.usage.prompt_tokens_details.cached_tokens == 39
    # a chat turn on top of that conversation (the tiny model has no template: turns joined)
    msgs = [{"role": "user", "content": follow}, {"role": "assistant", "content": r2.choices[0].text},
            {"role": "user", "content": tiny_words(5, seed=3)}]
    r3 = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, temperature=0)
    assert r3.usage.prompt_tokens == 47 + 10 + 5 and ext(r3.usage)["prompt_tokens_prefilled"] == 6
    other = client.completions.create(model="tiny", prompt=tiny_words(12, seed=4), max_tokens=3)
    assert ext(other.usage)["prompt_tokens_prefilled"] >= 11  # another conversation: (almost) all of it


def test_sampling_is_seeded(server):
    client = server.client()
    kw = dict(model="tiny", prompt=PROMPT, max_tokens=16, temperature=1.0, top_p=0.9, extra_body={"top_k": 20})
    a = client.completions.create(seed=7, **kw).choices[0].text
    assert client.completions.create(seed=7, **kw).choices[0].text == a
    assert any(client.completions.create(seed=s, **kw).choices[0].text != a for s in (8, 9, 10))


def test_stop_strings(server, folder):
    ref = generate(folder, PROMPT, "--no-chat-template", "-n", "24")
    words = ref["text"].split()
    stop = words[3]
    r = server.client().completions.create(model="tiny", prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and stop not in r.choices[0].text
    assert ref["text"].startswith(r.choices[0].text)


def test_models_and_health(server, folder):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny"]
    h = server.health()
    assert h["status"] == "ok" and h["model"] == "tiny" and h["draft"] == "lookup" and h["busy"] is False
    assert server.client().completions.create(model=str(folder), prompt="w3", max_tokens=2).model == "tiny"


BAD = [  # (body for /v1/completions, status, words of the message)
    ({"prompt": PROMPT, "n": 2}, 400, "one choice"),
    ({"prompt": PROMPT, "logprobs": 2}, 400, "probabilities"),
    ({"prompt": PROMPT, "model": "gpt-4"}, 404, "does not exist"),
    ({"prompt": PROMPT, "frequency_penalty": 0.5}, 400, "repetition_penalty"),
    ({"prompt": PROMPT, "draft": "head"}, 400, "drafts with 'lookup'"),
    ({"prompt": PROMPT, "verify": "relaxed"}, 400, "--verify relaxed"),
    ({"prompt": "   "}, 400, "empty"),
    ({"prompt": []}, 400, "empty"),
    ({"prompt": [3, 4, 999]}, 400, "vocabulary"),
    ({"prompt": ["w3", "w4"]}, 400, "one prompt"),
    ({"prompt": tiny_words(200)}, 400, "context"),
    ({"prompt": PROMPT, "max_tokens": 0}, 400, "max tokens"),
    ({"prompt": PROMPT, "max_tokens": 10**30}, 400, "max tokens"),
    ({"prompt": PROMPT, "temperature": -1}, 400, "temperature"),
    ({"prompt": PROMPT, "top_p": 0}, 400, "top-p"),
    ({"prompt": PROMPT, "seed": -1}, 400, "seed"),
    ({"prompt": PROMPT, "num_draft": 1000}, 400, "num-draft"),
    ({"prompt": PROMPT, "stop": ["a"] * 50}, 400, "stop"),
    ({"prompt": PROMPT, "temperature": "0"}, 400, "temperature"),
    ({"prompt": PROMPT, "stream": "yes"}, 400, "stream"),
    ({"prompt": PROMPT, "echo": True}, 400, "echo"),
    ({"max_tokens": 3}, 400, "missing required parameter: 'prompt'"),
]


def test_bad_requests_are_openai_errors(server):
    for body, status, words in BAD:
        got, doc, _ = server.post("/v1/completions", body)
        assert got == status, (body, doc)
        err = doc["error"]
        assert set(err) == {"message", "type", "param", "code"} and words in err["message"], (body, err)
        assert err["type"] == "invalid_request_error" and "\n" not in err["message"]
    chat_bad = [({"messages": []}, "non-empty"),
                ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "only text"),
                ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
                ({"messages": [{"role": "user", "content": "w3"}], "tools": [{"type": "function"}]}, "tool"),
                ({"messages": [{"role": "user", "content": "w3"}], "logprobs": True}, "probabilities")]
    for body, words in chat_bad:
        got, doc, _ = server.post("/v1/chat/completions", body)
        assert got == 400 and words in doc["error"]["message"], (body, doc)
    with pytest.raises(openai.BadRequestError, match="one choice"):
        server.client().completions.create(model="tiny", prompt=PROMPT, n=3)
    with pytest.raises(openai.NotFoundError):
        server.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "w3"}])
    assert server.health()["status"] == "ok"
    log = server.stderr()
    assert "Traceback" not in log and "POST /v1/completions 404" in log and "POST /v1/completions 200" in log


def test_api_key_cors_and_ctrl_c(folder, tmp_path):
    s = Server(["-m", folder, "--api-key", "sekrit", "--cors-origin", "http://localhost:3000"],
               tmp_path / "stderr.txt")
    try:
        s.start()
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").models.list()
        got, doc, headers = s.post("/v1/completions", b"{not json")  # no key: 401 before the body is read
        assert got == 401 and doc["error"]["code"] == "invalid_api_key"
        r = s.client(api_key="sekrit").completions.create(model="tiny", prompt=PROMPT, max_tokens=3)
        assert r.usage.completion_tokens == 3
        assert s.health()["status"] == "ok"  # /health needs no key
        pre = urllib.request.Request(s.url + "/v1/completions", method="OPTIONS", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
        with urllib.request.urlopen(pre, timeout=30) as resp:
            assert resp.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert s.interrupt() == 0
        log = s.stderr()
        assert "Traceback" not in log and log.rstrip().endswith("mlxspec serve: stopped"), log
    finally:
        s.stop()


def test_no_cors_unless_asked(server):
    pre = urllib.request.Request(server.url + "/v1/completions", method="OPTIONS", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    try:
        with urllib.request.urlopen(pre, timeout=30) as resp:
            headers = resp.headers
    except urllib.error.HTTPError as e:
        headers = e.headers
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


def test_bad_options_are_one_line(folder):
    from cli_check import assert_one_line_error

    for args, words in ([["--port", "70000"], "--port"], [["--max-queue", "-1"], "--max-queue"],
                        [["--idle-adapt", "nan"], "--idle-adapt"], [["--host", ""], "--host"],
                        [["--cors-origin", "evil"], "--cors-origin"], [["-m", "/nonexistent/x"], "x"],
                        [["--api-key", " "], "--api-key"]):
        assert_one_line_error(CliRunner().invoke(cli, ["serve", *args]), words)
