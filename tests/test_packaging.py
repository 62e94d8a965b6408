"""Packaging: pyproject states lower bounds (a notebook keeps its torch); tools/constraints.txt pins this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")
REPO = Path(__file__).resolve().parents[1]
KEEP_NOTEBOOK_TORCH = ("torch", "torchvision")  # what a Kaggle/Colab image ships with its own CUDA build


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def _constraints() -> dict[str, str]:
    lines = (REPO / "tools" / "constraints.txt").read_text().splitlines()
    pins = [Requirement(x) for x in lines if x.strip() and not x.startswith("#")]
    return {canonicalize_name(r.name): str(next(iter(r.specifier)).version) for r in pins}


@pytest.mark.parametrize("name", KEEP_NOTEBOOK_TORCH)
def test_torch_has_a_lower_bound_and_no_pin_or_cap(name):
    req = next(r for r in _requirements() if r.name == name)
    operators = {s.operator for s in req.specifier}
    assert operators == {">="}, f"pyproject.toml: {req} must be a lower bound (>=): a pin replaces a notebook's torch"


def test_constraints_pin_every_dependency_to_a_version_pyproject_allows():
    pins = _constraints()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"  # what `make install` installed before
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"tools/constraints.txt has no pin for {req.name}; refresh it (README, Install)"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates '{req}'"
