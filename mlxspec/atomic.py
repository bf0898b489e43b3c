"""The one way mlxspec writes a file the user must not lose: a temp file in the same
folder, fsync, os.replace, fsync of the folder. A kill -9 at any moment leaves either
the old file or the new one, never a torn one; a failed write removes its temp file.

Temp files are named `.<name>.tmp-<pid>-<random><suffix>`, so a reader that lists a folder
skips them (leading dot) and `clean_stale_temps` can remove those of dead processes.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

TMP_MARK = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Union[str, Path], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; whatever the block writes there replaces `path`
    atomically when the block succeeds, and is removed when it fails. `suffix` keeps an
    extension that a writer insists on (mx.save_safetensors wants `.safetensors`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: Union[str, Path], writer: Callable[[str], None], suffix: str = "") -> None:
    """Atomic write through a library writer that takes a file name (safetensors, numpy)."""
    with atomic_path(path, suffix=suffix) as tmp:
        writer(str(tmp))


def is_temp(path: Union[str, Path]) -> bool:
    name = Path(path).name
    return name.startswith(".") and TMP_MARK in name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: Union[str, Path]) -> int:
    """Remove temp files of writers that are gone (killed mid-write) from `folder`;
    returns the bytes freed. Temp files of live processes are left alone."""
    folder = Path(folder)
    freed = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if not (p.is_file() and is_temp(p)):
            continue
        try:
            pid = int(p.name.split(TMP_MARK, 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            pid = -1
        if pid > 0 and _pid_alive(pid) and pid != os.getpid():
            continue
        try:
            size = p.stat().st_size
            p.unlink()
            freed += size
        except OSError:
            pass
    return freed
