"""The wheel users install holds every module and data file of the source tree
(mlxspec/ and tui/, installed as mlxspec.tui). .ci/wheel-check passes the wheel it built
from the sdist in MLXSPEC_WHEEL; otherwise this builds the sdist and from it the wheel, as
that script does (a wheel built in the checkout would reuse build/, stale files and all)."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {".py", ".toml", ".tcss"}


def source_files() -> set[str]:
    out = set()
    for top, installed in (("mlxspec", "mlxspec"), ("tui", "mlxspec/tui")):
        for f in (ROOT / top).rglob("*"):
            if f.is_file() and f.suffix in SHIPPED and "__pycache__" not in f.parts:
                out.add(f"{installed}/{f.relative_to(ROOT / top).as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("MLXSPEC_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return next(out.glob("*.whl"))


def test_wheel_holds_every_module_and_data_file(wheel):
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if Path(n).suffix in SHIPPED and ".dist-info/" not in n}
    src = source_files()
    assert "mlxspec/hub/registry.toml" in src and "mlxspec/tui/chat.tcss" in src
    assert "mlxspec/adapt/__init__.py" in src and "mlxspec/tui/screens/__init__.py" in src
    assert sorted(src - shipped) == [], "missing from the wheel"
    assert sorted(shipped - src) == [], "in the wheel but not in the source tree"


def test_source_checkout_registry_links_to_the_packaged_one():
    link = ROOT / "models" / "registry.toml"
    assert link.resolve() == (ROOT / "mlxspec" / "hub" / "registry.toml").resolve()
