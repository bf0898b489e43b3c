"""Run the app under uvicorn on a socket bound here (so port 0 works and the real address
is known before the first request), until Ctrl-C or SIGTERM: uvicorn stops accepting,
lets running answers end for a few seconds (streams end at once), then the worker stops."""
from __future__ import annotations

import socket
from typing import Callable, Optional

from mlxspec.errors import MlxspecError, first_line

GRACE_S = 3  # seconds running answers get after Ctrl-C


class ListenError(MlxspecError):
    """The address cannot be bound (in use, not this machine's, no permission)."""


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except (OSError, UnicodeError) as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {first_line(exc)}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(app, sock: socket.socket, on_listening: Optional[Callable[[str], None]] = None,
        on_exit: Optional[Callable[[], None]] = None) -> None:
    """Serve until Ctrl-C / SIGTERM; on_exit() runs at once on the signal (the worker's
    shutdown: answers in flight end with a 503 instead of waiting out the grace period)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if on_exit is not None:
                on_exit()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_S,
                            lifespan="on")
    server = Server(config)
    if on_listening is not None:
        on_listening(url_of(sock))
    server.run(sockets=[sock])
