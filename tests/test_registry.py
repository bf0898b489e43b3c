"""The built-in registry ships in the package; the store's registry.toml adds and
overrides entries; a broken registry file is one clear line."""
import pytest
from click.testing import CliRunner

from mlxspec.cli.main import cli
from mlxspec.errors import RegistryError
from mlxspec.hub.registry import BUILTIN_REGISTRY, get_entry, known_names, load_registry
from cli_check import assert_one_line_error

BUILTIN = {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"}
EXTRA = '''
["my-model"]
description = "mine"
arch = "llama"
source = "hf"
hf = "me/my-model"

["smollm2-135m-instruct"]
description = "overridden"
arch = "llama"
source = "hf"
hf = "someone/else"
'''


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLXSPEC_REGISTRY", raising=False)
    monkeypatch.setenv("MLXSPEC_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_builtin_registry_is_package_data(store):
    assert BUILTIN_REGISTRY.parent.name == "hub" and BUILTIN_REGISTRY.is_file()
    assert set(known_names()) == BUILTIN


def test_store_registry_adds_and_overrides(store):
    (store / "registry.toml").write_text(EXTRA)
    reg = load_registry()
    assert set(reg) == BUILTIN | {"my-model"}
    assert get_entry("smollm2-135m-instruct").hf == "someone/else"
    assert get_entry("qwen2.5-coder-0.5b-instruct").source == "pypi-gguf"  # untouched
    out = CliRunner().invoke(cli, ["models", "list"]).output
    assert f"Model store: {store}" in out and "my-model" in out and "overridden" in out


@pytest.mark.parametrize("text", ["[broken", 'x = 1', '["e"]\narch = "llama"'])
def test_broken_store_registry_is_one_line(store, text):
    (store / "registry.toml").write_text(text)
    with pytest.raises(RegistryError, match="registry.toml"):
        load_registry()
    r = CliRunner().invoke(cli, ["models", "list"])
    assert_one_line_error(r, "registry")
