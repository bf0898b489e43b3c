"""Full float32 matmuls by default: with TF32 (MLX's default on CUDA and M5 matrix units)
a batched verify and a one-token step disagree by ~1e-2 in the logits, and greedy
speculative output would no longer equal plain output."""
import os
import subprocess
import sys

SNIPPET = "import os, mlxspec, mlx.core; print(os.environ['MLX_ENABLE_TF32'])"


def _run(env_value):
    env = {k: v for k, v in os.environ.items() if k != "MLX_ENABLE_TF32"}
    if env_value is not None:
        env["MLX_ENABLE_TF32"] = env_value
    return subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_importing_mlxspec_asks_for_full_float32():
    assert _run(None) == "0"


def test_an_explicit_user_choice_wins():
    assert _run("1") == "1"
