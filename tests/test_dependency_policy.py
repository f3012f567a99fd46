"""Dependency policy (docs/install.md): ranges in pyproject.toml, the exact tested set in constraints.txt.

A library pinning `torch==X` makes `pip install whispertune` replace a GPU user's own CUDA torch; the pins
belong in constraints.txt, which scripts/setup.sh and CI install with.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _dependencies() -> list[Requirement]:
    return [Requirement(line) for line in _project()["dependencies"]]


def _all_direct() -> list[Requirement]:
    reqs = _dependencies()
    for extra in _project().get("optional-dependencies", {}).values():
        reqs += [Requirement(line) for line in extra]
    return reqs


def _constraints() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, raw in enumerate((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;,]+)", line)
        assert match, f"constraints.txt:{number}: not an exact `name==version` pin: {raw!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def test_no_exact_pins_in_dependencies():
    pinned = [str(r) for r in _dependencies() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"exact pins belong in constraints.txt, not in [project] dependencies: {pinned}"


def test_every_dependency_has_a_lower_bound():
    missing = [str(r) for r in _dependencies() if not any(s.operator in (">=", ">", "~=") for s in r.specifier)]
    assert not missing, f"dependencies without a lower bound: {missing}"


def test_torch_range_admits_the_gpu_machines_build():
    """The GPU benchmarks run torch 2.11.0+cu130; CI runs 2.13.0 (CPU). Both must stay inside the range."""
    torch = next(r for r in _dependencies() if canonicalize_name(r.name) == "torch")
    for version in ("2.11.0+cu130", "2.13.0+cpu", "2.13.0"):
        assert torch.specifier.contains(version, prereleases=False), f"{torch} excludes {version}"


def test_every_direct_dependency_is_pinned_inside_its_range():
    pins = _constraints()
    problems = []
    for req in _all_direct():
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name}: not pinned in constraints.txt")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}: constraints.txt pins {pins[name]}, outside {req.specifier}")
    assert not problems, "; ".join(problems)


def test_constraints_leave_out_the_project_itself():
    assert canonicalize_name(_project()["name"]) not in _constraints()


def test_setup_installs_torch_from_the_constraints():
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "-c constraints.txt" in setup
    assert not re.search(r"torch==\d", setup), "setup.sh should take the torch pin from constraints.txt"
