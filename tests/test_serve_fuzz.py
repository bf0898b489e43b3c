"""Fuzzing `mlxspec serve`: a few hundred seeded malformed requests (random bytes, wrong
types, huge numbers, missing fields, odd unicode, wrong methods and headers). Every
malformed one gets a 4xx OpenAI error object, never a 5xx or a traceback; well-formed ones
with odd text get an answer or a 4xx; the server is alive and correct afterwards."""
from __future__ import annotations

import json
import random
import socket
import urllib.error
import urllib.request

import pytest

from serve_proc import Server
from tiny_folder import make_model_dir

SEED = 22
PROMPT = "w3 w4 w5"
FIELDS = {  # field -> kinds of junk that are malformed for it (anything but what the schema takes)
    "model": [0, True, [], {}, 1.5, 10**40],
    "max_tokens": [-1, 0, 1.5, "8", True, 10**40, -(10**40), [], {}, float("nan")],
    "temperature": ["0", True, [], {}, -1, 1e308, float("nan"), float("inf"), -1e308],
    "top_p": ["1", False, [], 0, -1.5, 2, float("nan")],
    "top_k": [-1, 1.5, "4", True, []],
    "seed": [-1, 10**40, 1.5, "7", True, {}],
    "stop": [1, True, {}, [1], [[]], ["a"] * 100, "x" * 5000],
    "stream": ["yes", 1, [], {}],
    "stream_options": ["x", 1, [], {"include_usage": "yes"}],
    "n": [0, 2, 10**40, "1", 1.5, True],
    "num_draft": [-1, 65, 10**40, "4", 1.5],
    "repetition_penalty": [0, -1, 11, "1.1", float("nan"), True],
    "frequency_penalty": [1, -2, "0.5"],
    "presence_penalty": [0.5, "x"],
    "draft": [1, [], "llama-70b", "\x00"],
    "verify": [1, "sloppy", []],
    "logprobs": ["yes", 5, [], {}],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = make_model_dir(tmp_path_factory.mktemp("fuzz") / "tiny")
    s = Server(["-m", folder, "-n", "4"], tmp_path_factory.mktemp("log") / "stderr.txt")
    try:
        yield s.start()
    finally:
        s.stop()


def send(server, path: str, data: bytes, method: str = "POST", headers=None) -> tuple[int, bytes]:
    req = urllib.request.Request(server.url + path, data=data if method == "POST" else None, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_error(status: int, raw: bytes, what) -> None:
    assert 400 <= status < 500, (status, raw[:300], what)
    doc = json.loads(raw)
    err = doc["error"]
    assert isinstance(err["message"], str) and err["message"] and "\n" not in err["message"], (doc, what)
    assert err["type"] and set(err) == {"message", "type", "param", "code"}, (doc, what)
    assert "Traceback" not in err["message"] and 'File "' not in err["message"], (doc, what)


def bodies(rng: random.Random):
    """(path, bytes, must_fail) for the malformed and odd requests."""
    base = {"completions": {"model": "tiny", "prompt": PROMPT, "max_tokens": 3},
            "chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}}
    for _ in range(80):  # random bytes, sometimes JSON-looking
        n = rng.choice([0, 1, 2, 10, 100, 2000])
        raw = bytes(rng.randrange(256) for _ in range(n))
        if rng.random() < 0.3:
            raw = b'{"prompt": ' + raw
        yield f"/v1/{rng.choice(list(base))}", raw, True
    for field, junk in FIELDS.items():  # wrong types and absurd values, each field
        for value in junk:
            for path in base:
                body = dict(base[path], **{field: value})
                yield f"/v1/{path}", json.dumps(body, allow_nan=True).encode(), True
    for path, b in base.items():  # missing fields, wrong shapes
        for key in b:
            if key in ("prompt", "messages"):
                yield f"/v1/{path}", json.dumps({k: v for k, v in b.items() if k != key}).encode(), True
        for shape in ([], [b], "text", 3, None):
            yield f"/v1/{path}", json.dumps(shape).encode(), True
    for bad in (None, 3, "hi", [], [{}], [{"role": "user"}], [{"content": "hi"}], [{"role": 1, "content": "hi"}],
                [{"role": "user", "content": 5}], [{"role": "user", "content": [{"type": "image_url"}]}],
                [{"role": "user", "content": [{"text": "no type"}]}], [{"role": "tool", "content": "x"}],
                [{"role": "user", "content": None}], [{"role": "user", "content": "   "}]):
        yield "/v1/chat/completions", json.dumps({"messages": bad}).encode(), True
    for bad in (None, 3, [], [-1], [1.5], [[-5]], [["a"]], [10**40], [True], {"text": "x"}, "", [[]]):
        yield "/v1/completions", json.dumps({"prompt": bad}).encode(), True
    odd = ["\x00", "\ud800", "\u202e w3", "🦙" * 50, "w3\u0301", "\ufeff", "a\r\nb", "\u2028", "w3 " * 3]
    for text in odd:  # well-formed requests with odd text: an answer or a 4xx, never a 5xx
        yield "/v1/completions", json.dumps({"prompt": text, "max_tokens": 2}).encode(), False
        yield "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": text}],
                                                  "stop": [text], "max_tokens": 2}).encode(), False


def test_malformed_requests_get_4xx_json_errors(server):
    rng = random.Random(SEED)
    cases = list(bodies(rng))
    assert len(cases) >= 300
    counts = {"4xx": 0, "ok": 0}
    for path, raw, must_fail in cases:
        status, body = send(server, path, raw)
        if must_fail or status >= 300:
            check_error(status, body, (path, raw[:200]))
            counts["4xx"] += 1
        else:
            assert status == 200 and json.loads(body)["choices"], (path, raw, body[:300])
            counts["ok"] += 1
    # methods, headers, endpoints
    for method, path in (("GET", "/v1/completions"), ("PUT", "/v1/chat/completions"), ("DELETE", "/v1/models"),
                         ("POST", "/v1/models"), ("GET", "/v1/nothing"), ("POST", "/health"),
                         ("GET", "/v1/models/gpt-4")):
        check_error(*send(server, path, b"{}", method=method), (method, path))
    body = json.dumps({"prompt": PROMPT}).encode()
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Length": "99999999999"}, {"Authorization": "Bearer x" * 1000}):
        status, raw = send(server, "/v1/completions", body, headers=headers)
        assert status == 200 or 400 <= status < 500, (headers, status)
        if status != 200:
            check_error(status, raw, headers)
    print(f"\nfuzz: {len(cases)} requests, {counts['4xx']} answered 4xx, {counts['ok']} answered")
    assert_alive_and_correct(server)


def test_protocol_junk_does_not_take_it_down(server):
    # a Content-Length that is not a number: the HTTP parser answers 400 before the app
    status, _ = send(server, "/v1/completions", b"{}", headers={"Content-Length": "banana"})
    assert status == 400
    rng = random.Random(SEED + 1)
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(30):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(rng.choice([b"", b"GET", b"\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{",
                                  bytes(rng.randrange(256) for _ in range(rng.randrange(1, 500)))]))
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(4096)
            except OSError:
                pass
    assert_alive_and_correct(server)


def assert_alive_and_correct(server):
    assert server.health()["status"] == "ok"
    status, doc, _ = server.post("/v1/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 5,
                                                     "temperature": 0})
    assert status == 200 and doc["usage"]["completion_tokens"] >= 1
    log = server.stderr()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]
