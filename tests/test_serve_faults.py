"""Faults in `mlxspec serve`: a model error fails its request only (a real server on
loopback in this process, over an engine that fails on given prompts), the queue's rules,
and kill -9 of the server while an adapting head trains between requests (the head on
disk loads afterwards)."""
from __future__ import annotations

import random
import threading
import time

import openai
import pytest

import mlxspec
from mlxspec.errors import InvalidParameterError
from serve_proc import Server
from tiny_folder import make_model_dir

FAIL_AT_START, FAIL_MID_REPLY = 60, 61  # token ids "w58", "w59" in a prompt trigger the faults


class FaultyEngine:
    """The real engine, failing on prompts holding a trigger token."""

    def __init__(self, engine):
        self._engine, self.resets = engine, 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def reset(self):
        self.resets += 1
        self._engine.reset()

    def stream(self, tokens, *args, **kw):
        if FAIL_AT_START in tokens:
            raise RuntimeError("boom at the start")
        inner = self._engine.stream(tokens, *args, **kw)
        if FAIL_MID_REPLY not in tokens:
            return inner

        def failing():
            for i, r in enumerate(inner):
                if i == 3:
                    raise InvalidParameterError("a bad thing after three tokens")
                yield r
        return failing()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real server on a loopback port, in a thread of this process, over a FaultyEngine."""
    import uvicorn

    from mlxspec.serve import server as srv
    from mlxspec.serve.app import create_app
    from mlxspec.serve.served import ServedModel
    from mlxspec.serve.worker import EngineWorker

    folder = make_model_dir(tmp_path_factory.mktemp("faults") / "tiny")
    worker = EngineWorker(lambda: FaultyEngine(mlxspec.load(str(folder))), max_queue=4)
    engine = worker.ready.result(timeout=120)
    app = create_app(worker, ServedModel.of(engine, str(folder), 16))
    sock = srv.bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=srv.url_of(sock) + "/v1", api_key="x", max_retries=0, timeout=60)
    try:
        yield client, engine
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_a_model_error_fails_that_request_only(live):
    client, engine = live
    ok = dict(model="tiny", prompt="w3 w4 w5", max_tokens=12, temperature=0)
    ref = client.completions.create(**ok).choices[0].text
    with pytest.raises(openai.InternalServerError, match="internal error: RuntimeError: boom at the start"):
        client.completions.create(model="tiny", prompt="w3 w58", max_tokens=12)
    assert client.completions.create(**ok).choices[0].text == ref
    with pytest.raises(openai.BadRequestError, match="a bad thing after three tokens"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "w3 w59"}], max_tokens=12)
    with pytest.raises(openai.APIError, match="a bad thing after three tokens"):  # streamed: an error event
        list(client.completions.create(model="tiny", prompt="w59 w3", max_tokens=12, stream=True))
    assert engine.resets == 3  # each failure reset the engine's cache
    assert client.completions.create(**ok).choices[0].text == ref
    chunks = list(client.completions.create(stream=True, **ok))
    assert "".join(c.choices[0].text for c in chunks) == ref


def test_the_queue_is_fifo_bounded_and_drops_cancelled_jobs():
    from mlxspec.serve.worker import JobQueue, QueueFull

    class J:
        cancelled = False

        def cancel(self):
            self.cancelled = True

    q = JobQueue(2)
    a, b, c = J(), J(), J()
    q.put(a)
    q.put(b)
    with pytest.raises(QueueFull) as full:
        q.put(c, retry_after=7)
    assert full.value.retry_after == 7
    q.discard(a)  # its client went away: the slot is free at once
    q.put(c)
    assert [q.get(), q.get()] == [b, c] and len(q) == 0
    q.put(a)
    q.close()
    assert a.cancelled and q.get() is None
    with pytest.raises(QueueFull):
        q.put(b)


def test_kill_9_while_the_head_trains_leaves_a_head_that_loads(tmp_path):
    from mlxspec.adapt import state
    from mlxspec.atomic import is_temp

    folder = make_model_dir(tmp_path / "tiny")
    rng = random.Random(22)
    kills = mid_write = 0
    updates = [0]
    for trial in range(3):
        s = Server(["-m", folder, "--draft", "head", "--idle-adapt", "60"], tmp_path / f"stderr{trial}.txt")
        try:
            s.start()
            client = s.client()
            for k in range(2):
                r = client.completions.create(model="tiny", prompt=f"w{3 + k} w4 w5 w6 w7", max_tokens=40)
                assert r.usage.completion_tokens > 0
            assert "head:adapting" in s.health()["draft"]
            deadline = time.monotonic() + 60
            while "head adapted:" not in s.stderr() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "head adapted:" in s.stderr(), s.stderr()  # idle training ran and saved
            # ... and goes on for up to a minute, but a request does not wait for it
            r = client.completions.create(model="tiny", prompt="w9 w8 w7", max_tokens=4)
            assert r.usage.model_extra["mlxspec"]["queue_wait_s"] < 0.5, r.usage  # not the rest of a 3 s slice
            time.sleep(rng.uniform(0, 3.0))  # training again: kill it somewhere in there
        finally:
            s.proc.kill()
            s.proc.wait(30)
        kills += s.proc.returncode == -9
        mid_write += any(is_temp(f) for f in state.state_dir(folder).iterdir())
        got = state.load(folder)
        assert got is not None and got.counters.updates > updates[-1], trial  # it learnt in this run too
        updates.append(got.counters.updates)
        assert not any(is_temp(f) for f in state.state_dir(folder).iterdir())  # cleaned by the load
        engine = mlxspec.load(str(folder), draft="head", adapt=False)  # the head on disk drafts
        assert engine.draft_name.startswith("head:adapted")
        assert mlxspec.generate(engine, "w3 w4 w5", max_tokens=8, chat_template=False) == \
            mlxspec.generate(mlxspec.load(str(folder), draft="none"), "w3 w4 w5", max_tokens=8, chat_template=False)
    assert kills == 3
    print(f"\nkill -9 while the head trains: {kills} kills, {mid_write} landed mid-write, 0 failures")
