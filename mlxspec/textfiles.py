"""Finding and reading a person's text files: what `train-head --corpus` and
`adapt --texts` (mlxspec/adapt/texts.py) both read, below both."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterable, Optional

from mlxspec.errors import InvalidParameterError

TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst", ".c", ".h", ".js", ".ts", ".json", ".toml",
                 ".cfg", ".ini", ".yaml", ".yml", ".sh", ".html", ".css", ".tex", ".csv", "",
                 ".java", ".cpp", ".go", ".rs", ".rb", ".sql", ".swift"}


def expand_paths(specs: Iterable[str], what: str = "corpus") -> list[Path]:
    """Files and directories (walked for text files, hidden ones skipped) named on the
    command line (`what`: the option, for the error lines)."""
    out: list[Path] = []
    for s in specs:
        p = Path(s).expanduser()
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    q = Path(dirpath) / f
                    suf = q.suffix.lower()
                    if suf == ".gz":
                        suf = Path(q.stem).suffix.lower()
                    if suf in TEXT_SUFFIXES and not f.startswith("."):
                        out.append(q)
        else:
            raise InvalidParameterError(f"{what} path {s} does not exist")
    if not out:
        raise InvalidParameterError(f"the {what} is empty (no text files found)")
    return out


def read_text(path: Path, max_bytes: Optional[int] = None) -> Optional[str]:
    """The file's text (gzip'ed ones decompressed); None for a binary or unreadable file,
    or one larger than `max_bytes`."""
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            return None
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        if b"\0" in raw[:4096]:
            return None  # binary
        return raw.decode("utf-8", errors="replace")
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
