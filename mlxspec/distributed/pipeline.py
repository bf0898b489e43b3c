"""A target split across the ranks of MLX's distributed group (`mlx.launch`), pipeline style.

Rank 0 holds the embedding, the first block of layers, the final norm and the LM head, and
runs everything else: tokenizer, drafters, governor, verification. Rank r > 0 holds the
r-th contiguous block of layers and serves it (worker.py). Every forward goes round the
ring: rank 0 runs its layers, sends a command and the hidden states to rank 1, each rank
runs its layers and passes them on, and the last rank sends them back to rank 0, which
projects them. Rewinds (trim) and tree compaction travel the same way, so every rank's KV
cache always describes the same tokens. Only MLX's own send/recv are used.

A command is one int32 message: a header (op, slot, tokens, payload length, dtype, a freed
slot, the test delay) and up to INLINE payload entries (a tree's parents, a kept path; a
longer payload follows as a second message); a forward's states follow it.
MLXSPEC_DIST_DELAY_MS adds a delay before every message, to stand for a slower link.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Optional

import mlx.core as mx

from mlxspec.errors import MlxspecError, first_line

FORWARD, TREE, COMPACT, TRIM, NEW, STOP = range(1, 7)
HEADER = 8
INLINE = 120  # payload entries that travel in the command message itself (one message a hop)
MESSAGE = HEADER + INLINE
DTYPES = (mx.float32, mx.bfloat16, mx.float16)
DEFAULT_TIMEOUT_S = 120.0  # a rank silent this long during a step is dead or hung


class RankLostError(MlxspecError):
    """A rank of the distributed group died or stopped answering."""


def launched() -> bool:
    """Started by mlx.launch (ring, JACCL) or mpirun with more than one process."""
    env = os.environ
    return "MLX_RANK" in env or "OMPI_COMM_WORLD_SIZE" in env or "PMI_SIZE" in env


def world():
    """MLX's distributed group when this process is one of several ranks, else None."""
    if not launched():
        return None
    group = mx.distributed.init()
    return group if group.size() > 1 else None


def split(num_layers: int, ranks: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) blocks of layers, one per rank, the first ranks taking the
    remainder. A rank may get no layers (it only passes the states on)."""
    base, extra = divmod(num_layers, ranks)
    out, start = [], 0
    for r in range(ranks):
        n = base + (1 if r < extra else 0)
        out.append((start, start + n))
        start += n
    return out


class Pipeline:
    """This rank's place in the pipeline and the messages it sends and receives."""

    def __init__(self, group, num_layers: int, timeout_s: Optional[float] = None):
        self.group = group
        self.rank, self.size = group.rank(), group.size()
        self.ranges = split(num_layers, self.size)
        self.start, self.end = self.ranges[self.rank]
        env = os.environ.get("MLXSPEC_DIST_TIMEOUT")
        self.timeout_s = float(env) if env else (timeout_s or DEFAULT_TIMEOUT_S)
        self.next_rank = (self.rank + 1) % self.size
        self.prev_rank = (self.rank - 1) % self.size
        delay = os.environ.get("MLXSPEC_DIST_DELAY_MS")
        self.delay_s = float(delay) / 1e3 if delay else 0.0  # rank 0's reaches the others
        self.comm_s = 0.0  # wall time in send/recv (including waiting for the other ranks)
        self.messages = 0
        self.lost = False
        self._slots = 0
        self._freed: list[int] = []
        self.stopped = False
        # Rank 0 reports a dead or hung rank; the others end when rank 0's link closes.
        self._watchdog = Watchdog(self.rank, self.timeout_s) if self.rank == 0 else None

    # -- point to point -------------------------------------------------------------
    def send(self, x: mx.array, dst: int) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._timed():
            mx.eval(mx.distributed.send(x, dst, group=self.group))

    def recv(self, shape, dtype, src: int, deadline: bool = True) -> mx.array:
        with self._timed(deadline):
            y = mx.distributed.recv(tuple(shape), dtype, src, group=self.group)
            mx.eval(y)
        return y

    @contextmanager
    def _timed(self, deadline: bool = True):
        if self.lost:
            raise RankLostError("a rank of the distributed group was lost earlier; restart mlx.launch")
        armed = deadline and self._watchdog is not None
        if armed:
            self._watchdog.arm()
        t0 = time.perf_counter()
        try:
            yield
        except RuntimeError as exc:  # the ring backend: "connection to a peer was lost"
            self.lost = True
            raise RankLostError(f"rank {self.rank} lost its peers: {first_line(exc)}") from None
        finally:
            if armed:
                self._watchdog.disarm()
            self.comm_s += time.perf_counter() - t0
            self.messages += 1

    # -- commands (rank 0) -------------------------------------------------------------
    def command(self, op: int, slot: int = -1, tokens: int = 0, payload=(), dtype=mx.float32) -> None:
        """Send a command to rank 1 (and so round the ring); freed slots ride along."""
        free = self._freed.pop() if self._freed else -1
        payload = [int(x) for x in payload]
        head = [op, slot, tokens, len(payload), DTYPES.index(dtype), free, int(self.delay_s * 1e6), 0]
        inline = payload[:INLINE]
        self.send(mx.array(head + inline + [0] * (INLINE - len(inline)), dtype=mx.int32), self.next_rank)
        if len(payload) > INLINE:
            self.send(mx.array(payload[INLINE:], dtype=mx.int32), self.next_rank)

    def receive_command(self) -> tuple[list[int], list[int], list[mx.array]]:
        """A worker's next command: (header, payload, the messages as received, to pass on)."""
        msg = self.recv((MESSAGE,), mx.int32, self.prev_rank, deadline=False)
        values = msg.tolist()
        head, npay = values[:HEADER], values[3]
        payload, raw = values[HEADER:HEADER + min(npay, INLINE)], [msg]
        if npay > INLINE:
            rest = self.recv((npay - INLINE,), mx.int32, self.prev_rank)
            payload += rest.tolist()
            raw.append(rest)
        self.delay_s = head[6] / 1e6
        return head, payload, raw

    def open_slot(self) -> int:
        """A new set of KV caches on every rank (one per runner on rank 0)."""
        self._slots += 1
        self.command(NEW, self._slots)
        return self._slots

    def close_slot(self, slot: int) -> None:
        """Called when a runner is collected: the workers drop its caches with the next command."""
        self._freed.append(slot)

    def stop(self) -> None:
        """Rank 0 is done: the workers exit."""
        if self.stopped or self.lost or self.rank != 0:
            return
        self.stopped = True
        try:
            self.command(STOP)
        except MlxspecError:
            pass

    def mark(self) -> tuple:
        return self.comm_s, self.messages

    def since(self, mark: tuple) -> dict:
        """What a reply reports: the split, and its time and messages in communication."""
        return {"ranks": self.size, "layers": [list(r) for r in self.ranges],
                "comm_s": round(self.comm_s - mark[0], 4), "messages": self.messages - mark[1]}


# A blocked send/recv holds the interpreter inside MLX, so no thread of this process can
# act on a timeout: a small process does. It is armed before each message and disarmed
# after; if a message takes longer it prints one line and kills this process.
_WATCHDOG = r"""
import os, select, signal, sys, time
pid, rank, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
deadline = None
while True:
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not select.select([0], [], [], wait)[0]:
        sys.stderr.write("Error: rank %s: no answer from the other ranks within %g s (a rank died or "
                         "hangs; MLXSPEC_DIST_TIMEOUT sets the limit)\n" % (rank, limit))
        sys.stderr.flush()
        os.kill(pid, signal.SIGKILL)
        sys.exit(0)
    data = os.read(0, 4096)
    if not data:
        sys.exit(0)  # the watched process ended
    deadline = time.monotonic() + limit if data.endswith(b"A") else None
"""


class Watchdog:
    def __init__(self, rank: int, limit_s: float):
        self.proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(rank), str(limit_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.fd = self.proc.stdin.fileno()

    def arm(self) -> None:
        os.write(self.fd, b"A")

    def disarm(self) -> None:
        os.write(self.fd, b"D")
