"""Package discovery for setuptools (metadata lives in pyproject.toml).

`tui/` is installed as `mlxspec.tui`, which pyproject's static `packages.find` cannot
express; every package under mlxspec/ and tui/ is found here, so none can be forgotten.
"""
from setuptools import find_packages, setup

tui = ["mlxspec.tui"] + [f"mlxspec.tui.{p}" for p in find_packages("tui")]

setup(
    packages=find_packages(include=["mlxspec", "mlxspec.*"]) + tui,
    package_dir={"mlxspec.tui": "tui"},
    package_data={"mlxspec.hub": ["registry.toml"], "mlxspec.tui": ["*.tcss"]},
)
