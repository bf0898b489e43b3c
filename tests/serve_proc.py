"""`mlxspec serve` as a real process on a loopback port, for the server tests.

The server binds port 0 and prints its address on stderr (kept in a file, so a full pipe
cannot block it); `Server.start` waits for that line and for /health, and `stop` kills
it (tests use it in fixture finalizers, so no server outlives its test)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

START_TIMEOUT_S = 180  # a shared 2-core machine at load ~10 imports and loads slowly
_URL = re.compile(r" on (http://127\.0\.0\.1:\d+)/v1")


class Server:
    def __init__(self, args: list, log: Path, env: Optional[dict] = None):
        self.args, self.log = [str(a) for a in args], Path(log)
        self.env = {k: v for k, v in os.environ.items() if k not in ("MLXSPEC_DEBUG", "MLXSPEC_ADAPT")}
        self.env.update(env or {})
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""

    def start(self, timeout: float = START_TIMEOUT_S) -> "Server":
        cmd = [sys.executable, "-c", "from mlxspec.cli.main import main; main()", "serve", "--port", "0", *self.args]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=self.env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _URL.search(self.stderr())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.stderr()}")
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"server did not start in {timeout} s:\n{self.stderr()}")
        while self.health() is None:
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"no /health in {timeout} s:\n{self.stderr()}")
            time.sleep(0.1)
        return self

    def stderr(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def health(self) -> Optional[dict]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def post(self, path: str, body, headers: Optional[dict] = None, timeout: float = 120) -> tuple[int, dict, dict]:
        """(status, JSON body, headers) of a POST; `body` is bytes as they are, or JSON-encoded."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw), dict(e.headers)

    def client(self, **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0,
                             timeout=kw.pop("timeout", 120), **kw)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C: SIGINT, and the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def tiny_words(n: int, seed: int = 0) -> str:
    """A prompt in the tiny model's vocabulary (tests/tiny_folder.py)."""
    import random

    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(2, 60)}" for _ in range(n))


def endless_folder(path: Path, context: int = 101_000) -> Path:
    """The tiny model folder without an end token and with a long context: a reply runs to
    its max_tokens (minutes for a large one), so a test can hold the engine busy."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tiny_folder import WORDS, make_model_dir

    folder = make_model_dir(path)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    for f in folder.glob("*token*"):
        f.unlink()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("eos_token_id")
    cfg["max_position_embeddings"] = context
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder
