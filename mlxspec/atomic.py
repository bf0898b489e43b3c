"""The one way mlxspec writes a file the user must not lose: a temp file in the same
folder, fsync, os.replace, fsync of the folder. A kill -9 at any moment leaves either
the old file or the new one, never a torn one; a failed write removes its temp file.
Folders (selfgen shards, training checkpoints, a pulled model) are written the same way:
a temp folder, then swapped into place (`atomic_dir`, `replace_dir`).

Temp files and folders are named `.<name>.tmp-<pid>-<random><suffix>`, so a reader that
lists a folder skips them (leading dot; `is_temp` tells) and `clean_stale_temps` removes
those of dead processes.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

TMP_MARK = ".tmp-"
# ours: `.name.tmp-PID-xxxx`; older writers: `.name.tmpPID...` and `.name.xxxx.tmp`
_TEMP_RE = re.compile(r"^\..+\.tmp(?:-?(\d+)(?:[-.].*)?)?$")
_UNKNOWN_PID_AGE_S = 600  # a temp file without a pid is stale once this old


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


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _temp_prefix(path: Path) -> str:
    return f".{path.name}{TMP_MARK}{os.getpid()}-"


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path: Union[str, Path], suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside `path`; whatever the block writes there replaces `path`
    atomically when the block succeeds, and is removed when it fails. `suffix` keeps an
    extension that a writer insists on (mx.save_safetensors wants `.safetensors`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _fsync_file(tmp)
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


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE,
    macOS renamex_np RENAME_SWAP); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
            at_fdcwd, rename_exchange = -100, 2
            rc = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
        elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
            rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), 0x2)
        else:
            return False
    except (OSError, AttributeError):
        return False
    return rc == 0


def replace_dir(src: Union[str, Path], dest: Union[str, Path]) -> None:
    """Put folder `src` at `dest`, atomically even when `dest` exists: the two are swapped
    in one step and the old `dest` (now at `src`) is removed. Where the system has no
    swap, the old folder is first renamed to a temp name (a kill in between leaves no
    `dest`, but the old folder stays on disk under `.<name>.tmp-…`)."""
    src, dest = Path(src), Path(dest)
    if not dest.exists():
        os.rename(src, dest)
    elif _exchange(src, dest):
        _remove(src)
    else:
        aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(dest), dir=dest.parent))
        os.rmdir(aside)
        os.rename(dest, aside)
        os.rename(src, dest)
        _remove(aside)
    _fsync_dir(dest.parent)


@contextmanager
def atomic_dir(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a temp folder beside `path`; when the block succeeds its files are fsynced
    and the folder replaces `path` (`replace_dir`); when it fails it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        _fsync_dir(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def discard_dir(path: Union[str, Path]) -> None:
    """Remove a folder so that a kill mid-way leaves no half-deleted folder under its real
    name: it is renamed to a temp name first (clean_stale_temps finishes the job)."""
    path = Path(path)
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    os.rmdir(aside)
    os.rename(path, aside)
    _remove(aside)


def is_temp(path: Union[str, Path]) -> bool:
    return _TEMP_RE.match(Path(path).name) is not None


def temp_pid(path: Union[str, Path]) -> int:
    """The writer's pid in a temp name, or -1 where the name has none."""
    m = _TEMP_RE.match(Path(path).name)
    return int(m.group(1)) if m and m.group(1) else -1


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tree_size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for f in path.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_size
        except OSError:
            pass
    return total


def _stale(p: Path) -> bool:
    pid = temp_pid(p)
    if pid > 0:
        return pid != os.getpid() and not pid_alive(pid)
    try:
        return time.time() - p.lstat().st_mtime > _UNKNOWN_PID_AGE_S
    except OSError:
        return False


def clean_stale_temps(folder: Union[str, Path]) -> int:
    """Remove temp files and folders of writers that are gone (killed mid-write) from
    `folder`; returns the bytes freed. Those of live processes are left alone; errors
    (a read-only folder) are ignored, since cleaning is never required."""
    folder = Path(folder)
    freed = 0
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return 0
    for p in entries:
        if not is_temp(p) or not _stale(p):
            continue
        size = tree_size(p)
        try:
            _remove(p)
            freed += size
        except OSError:
            pass
    return freed
