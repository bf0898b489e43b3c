"""`mlxspec serve` under bounded load on loopback: concurrent clients each get an answer or
a 503 with Retry-After (none hangs), the queue holds what --max-queue says, a client that
goes away mid-answer frees the engine for the next one, and memory stays bounded."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.request

import openai
import pytest

from serve_proc import Server, endless_folder, tiny_words

LONG = 100_000  # tokens: a reply that would run for minutes unless cancelled


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = endless_folder(tmp_path_factory.mktemp("load") / "tiny", context=LONG + 1000)
    s = Server(["-m", folder, "--max-queue", "2"], tmp_path_factory.mktemp("log") / "stderr.txt")
    try:
        yield s.start()
    finally:
        s.stop()


def wait_idle(server, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = server.health()
        if h and not h["busy"] and h["queued"] == 0:
            return h
        time.sleep(0.05)
    raise AssertionError(f"the engine is still busy after {timeout} s: {server.health()}")


class LongStream:
    """A streamed request that would run for minutes, read until its third chunk; close()
    is the client going away."""

    def __init__(self, server):
        host, port = server.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        body = {"model": "tiny", "prompt": tiny_words(8), "max_tokens": LONG, "stream": True}
        self.conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        assert resp.status == 200
        got = 0
        while got < 3:
            got += resp.readline().startswith(b"data: {")
        self.resp = resp

    def close(self):
        self.resp.close()
        self.conn.close()


def test_concurrent_clients_complete_or_get_503(server):
    wait_idle(server)
    rss0 = server.rss_mb()
    results, hung = [], []

    def client_loop(i):
        client = server.client(timeout=60)
        for j in range(5):
            try:
                r = client.completions.create(model="tiny", prompt=tiny_words(10, seed=10 * i + j), max_tokens=30,
                                              stream=(j % 2 == 1))
                if j % 2 == 1:
                    r = list(r)
                results.append("ok")
            except openai.APIStatusError as e:
                assert e.status_code == 503 and int(e.response.headers["retry-after"]) >= 1, e
                assert e.body["code"] == "queue_full" if isinstance(e.body, dict) else True
                results.append("503")
            except openai.APITimeoutError:
                hung.append((i, j))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and not hung, hung
    assert len(results) == 40 and results.count("ok") >= 8, results
    wait_idle(server)
    assert server.rss_mb() - rss0 < 300, (rss0, server.rss_mb())  # MB; nothing piles up


def test_a_full_queue_answers_503_and_waiting_requests_run_in_order(server):
    wait_idle(server)
    held = LongStream(server)  # holds the engine
    done, order = [], []

    def waiting(k):
        r = server.post("/v1/completions", {"model": "tiny", "prompt": tiny_words(6, seed=k), "max_tokens": 4})
        done.append(r[0])
        order.append(k)

    try:
        ts = []
        for k in range(2):  # --max-queue 2: both wait
            ts.append(threading.Thread(target=waiting, args=(k,)))
            ts[-1].start()
            deadline = time.monotonic() + 10
            while server.health()["queued"] < k + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert server.health()["queued"] == 2
        status, doc, headers = server.post("/v1/completions", {"model": "tiny", "prompt": "w3", "max_tokens": 2})
        assert status == 503 and doc["error"]["code"] == "queue_full" and int(headers["retry-after"]) >= 1
    finally:
        held.close()  # the client goes away: its reply is cancelled
    for t in ts:
        t.join(30)
    assert done == [200, 200] and order == [0, 1]  # FIFO
    wait_idle(server)


def test_a_client_that_disconnects_mid_stream_frees_the_engine(server):
    wait_idle(server)
    held = LongStream(server)
    assert server.health()["busy"]
    t0 = time.monotonic()
    held.close()
    r = server.client(timeout=20).completions.create(model="tiny", prompt="w3 w4", max_tokens=4)
    assert r.usage.completion_tokens == 4 and time.monotonic() - t0 < 15
    wait_idle(server)
    assert "POST /v1/completions 499 stream" in server.stderr()


def test_a_client_that_times_out_on_a_whole_answer_frees_the_engine(server):
    wait_idle(server)
    body = json.dumps({"model": "tiny", "prompt": "w3 w4", "max_tokens": LONG}).encode()
    req = urllib.request.Request(server.url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with pytest.raises((socket.timeout, TimeoutError)):
        urllib.request.urlopen(req, timeout=1.0)
    wait_idle(server, timeout=15)  # the server noticed within its poll and stopped generating
    log = server.stderr()
    assert "POST /v1/completions 499 · client went away" in log, log[-2000:]


def test_ctrl_c_while_answering_ends_every_answer_and_exits(server):
    """Last in this module: it stops the module's server."""
    wait_idle(server)
    held = LongStream(server)  # running
    results = []

    def whole(k):
        results.append(server.post("/v1/completions", {"model": "tiny", "prompt": "w3 w4", "max_tokens": LONG}))

    waiting = threading.Thread(target=whole, args=(0,))  # queued behind it
    waiting.start()
    deadline = time.monotonic() + 10
    while server.health()["queued"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    assert server.interrupt(timeout=30) == 0
    assert time.monotonic() - t0 < 10  # not the minutes the answers would take
    rest = held.resp.read().decode()
    held.close()
    assert '"code":"server_shutting_down"' in rest and rest.rstrip().endswith("data: [DONE]"), rest[-500:]
    waiting.join(10)
    status, doc, _ = results[0]
    assert status == 503 and doc["error"]["code"] == "server_shutting_down"
    log = server.stderr()
    assert "Traceback" not in log and log.rstrip().endswith("mlxspec serve: stopped"), log[-2000:]
