"""The local model store: the model-folder check, resolve_model, `models list` and
`models rm` (fake folders in a temp store, no network)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from mlxspec.cli.main import cli
from mlxspec.errors import ModelLoadError, ModelNotFoundError
from mlxspec.hub import store
from mlxspec.hub.store import check_model_dir, hub_error_message, resolve_model
from tiny_folder import make_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("src") / "m")


@pytest.fixture
def models(tmp_path, monkeypatch):
    """An empty store with a registry of one model, `tiny`."""
    root = tmp_path / "models"
    root.mkdir()
    reg = tmp_path / "registry.toml"
    reg.write_text('["tiny"]\ndescription = "tiny test model"\narch = "llama"\nsource = "pypi-gguf"\n'
                   'packages = ["tiny==1"]\nmember = "*.bin"\n')
    monkeypatch.setenv("MLXSPEC_MODELS_DIR", str(root))
    monkeypatch.setenv("MLXSPEC_REGISTRY", str(reg))
    return root


def install(models, tiny_dir, name="tiny"):
    return shutil.copytree(tiny_dir, models / name)


def one_line_error(r, *needles):
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# -- check_model_dir: the model's own files only -----------------------------------------
def test_a_corrupt_reply_store_or_a_leftover_temp_does_not_stop_the_model(models, tiny_dir):
    m = install(models, tiny_dir)
    (m / "reply-store.safetensors").write_bytes(b"garbage")
    leftover = m / ".reply-store.tmp999999999.safetensors"  # the old writer's temp of a killed write
    leftover.write_bytes(b"\x00" * 100)
    (m / "heads").mkdir()
    (m / "heads" / "broken.safetensors").write_bytes(b"not a head")
    check_model_dir(m)
    assert not leftover.exists()  # cleaned up
    r = CliRunner().invoke(cli, ["generate", "-m", "tiny", "--draft", "none", "-n", "3", "w1 w2"])
    assert r.exit_code == 0, r.output


def test_truncated_or_missing_model_weights_are_caught_with_what_to_do(models, tiny_dir):
    m = install(models, tiny_dir)
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"incomplete weights file .*models pull tiny --force \(trained heads"):
        check_model_dir(m)
    (m / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="corrupt weights file"):
        check_model_dir(m)
    (m / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights"):
        check_model_dir(m)


def test_the_index_decides_which_shards_are_weights(models, tiny_dir):
    m = install(models, tiny_dir)
    os.rename(m / "model.safetensors", m / "model-00001.safetensors")
    (m / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001.safetensors", "b": "model-00002.safetensors"}}))
    with pytest.raises(ModelLoadError, match="missing weight files .*model-00002"):
        check_model_dir(m)


def test_a_missing_tokenizer_gives_a_complete_message(models, tiny_dir):
    m = install(models, tiny_dir)
    (m / "tokenizer.json").unlink()
    r = CliRunner().invoke(cli, ["generate", "-m", "tiny", "--draft", "none", "w1"])
    line = one_line_error(r, "no tokenizer", "tokenizer.json", "mlxspec models pull tiny --force")
    assert not line.rstrip().endswith(":")  # mlx-lm's own message was cut at "from one of: "


def test_an_interrupted_download_is_refused(models, tiny_dir):
    m = install(models, tiny_dir)
    (m / ".partial").touch()
    with pytest.raises(ModelLoadError, match="interrupted download"):
        check_model_dir(m)


# -- resolve_model ---------------------------------------------------------------------------
def test_resolve_registry_names_with_and_without_a_format_suffix(models, tiny_dir):
    with pytest.raises(ModelNotFoundError, match="not installed; run: mlxspec models pull tiny$"):
        resolve_model("tiny")
    with pytest.raises(ModelNotFoundError, match="run: mlxspec models pull tiny --dtype q4$"):
        resolve_model("tiny-q4")
    install(models, tiny_dir)
    install(models, tiny_dir, "tiny-q4")
    assert resolve_model("tiny") == models / "tiny"
    assert resolve_model("tiny-q4") == models / "tiny-q4"


def test_resolve_folders_files_and_unknown_names(models, tiny_dir, tmp_path):
    assert resolve_model(str(tiny_dir)) == tiny_dir
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(str(f))
    with pytest.raises(ModelNotFoundError, match="known models: tiny"):
        resolve_model("no-such-model")


def test_a_hub_id_offline_gives_a_complete_readable_line(models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("someone/some-model")
    msg = str(e.value)
    assert "\n" not in msg and "Got:" not in msg and "offline" in msg
    assert "mlxspec models pull NAME (tiny)" in msg


def test_hub_errors_say_what_failed_and_what_to_do():
    from huggingface_hub import errors as hub

    got = hub.LocalEntryNotFoundError(
        "Got: ConnectError: [Errno -2] Name or service not known\nAn error happened while trying to locate the files")
    msg = hub_error_message("a/b", got)
    assert "Got:" not in msg and "cannot be reached (offline)" in msg and "\n" not in msg
    long = RuntimeError("Got: " + "word " * 100)
    msg = hub_error_message("a/b", long)
    assert msg.count("word") == 100 and not msg.startswith("Got") and "Got:" not in msg  # not cut at 160


# -- models list ---------------------------------------------------------------------------
def test_models_list_shows_heads_and_the_reply_store_with_sizes(models, tiny_dir):
    m = install(models, tiny_dir)
    (m / "heads").mkdir()
    (m / "heads" / "eagle.safetensors").write_bytes(b"x" * 3_000_000)
    (m / "heads" / "eagle.json").write_text("{}")
    (m / "heads" / ".eagle.safetensors.tmp-999999999-ab.safetensors").write_bytes(b"x")
    (m / "reply-store.safetensors").write_bytes(b"x" * 2_000_000)
    r = CliRunner().invoke(cli, ["models", "list"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    head = next(line for line in lines if "head eagle" in line)
    assert "3.0 MB" in head
    assert any("reply store" in line and "2.0 MB" in line for line in lines)
    assert "tmp-999999999" not in r.output
    assert any(line.split()[:3] == ["tiny", "llama", "float32"] for line in lines)


def test_models_list_removes_stale_pull_folders_and_says_how_much(models, tiny_dir):
    from test_atomic import dead_pid

    stale = models / f".pull-tiny-{dead_pid()}"
    (stale / "model").mkdir(parents=True)
    (stale / "model.gguf").write_bytes(b"x" * 1_500_000)
    live = models / f".pull-tiny-{os.getppid()}"
    live.mkdir()
    r = CliRunner().invoke(cli, ["models", "list"])
    assert r.exit_code == 0
    assert not stale.exists() and live.exists()
    assert "Removed 1 interrupted download(s) from the model store, freed 1.5 MB" in r.stderr
    assert "pull-" not in r.stdout


def test_store_file_name_matches_the_reply_store():
    from mlxspec.drafters.reply_store import STORE_FILE

    assert store.STORE_FILE == STORE_FILE


# -- models rm: only inside the store ------------------------------------------------------
def test_models_rm_removes_a_store_model(models, tiny_dir):
    install(models, tiny_dir)
    install(models, tiny_dir, "tiny-q4")
    r = CliRunner().invoke(cli, ["models", "rm", "tiny-q4"])
    assert r.exit_code == 0 and not (models / "tiny-q4").exists() and (models / "tiny").exists()
    r = CliRunner().invoke(cli, ["models", "rm", str(models / "tiny")])  # a path to a store folder
    assert r.exit_code == 0 and os.listdir(models) == []


def test_models_rm_cannot_delete_outside_the_store(models, tiny_dir, tmp_path):
    outside = shutil.copytree(tiny_dir, tmp_path / "elsewhere")  # has a config.json
    install(models, tiny_dir)
    os.symlink(outside, models / "link")
    runner = CliRunner()
    for spec in (str(outside), "../elsewhere", str(models / ".." / "elsewhere"), "link",
                 str(models / "link"), "..", ".", "", "tiny/..", str(models)):
        r = runner.invoke(cli, ["models", "rm", spec])
        one_line_error(r)
        assert (outside / "config.json").is_file(), spec
        assert (models / "tiny" / "config.json").is_file(), spec
    one_line_error(runner.invoke(cli, ["models", "rm", "not-installed"]), "not installed")
