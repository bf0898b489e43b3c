"""The README's Python API example runs as written after `make demo` (smollm2 pulled)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not (REPO / "models" / "smollm2-135m-instruct" / "config.json").exists(),
                       reason="smollm2-135m-instruct not pulled (make demo)"),
]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("### Python API", 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section should hold one python block"
    return blocks[0]


def test_readme_python_example_runs():
    # As written, but a few tokens per call: a loaded 2-core CI box may decode ~1 token/s.
    code, n = re.subn(r"max_tokens=\d+", "max_tokens=8", readme_example())
    assert n >= 1
    # print what the example computed, so the test checks it did real work
    code += "\nprint()\nprint('RESULT', repr(text), r.generation_tokens, r.stats.method)\n"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT '") and last != "RESULT ''", last
    streamed = out.stdout.split("\nRESULT", 1)[0]
    stats = re.search(r"([\d.]+) ([\d.]+) ([\d.]+)\s*$", streamed)  # the example's print of three stats
    assert stats and float(stats[3]) > 0, streamed
    assert streamed[:stats.start()].strip()  # the streamed text came first
    assert int(last.split()[-2]) == 8  # the second call generated its max_tokens
