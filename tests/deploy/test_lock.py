"""The lock (requirements.txt, requirements-dev.txt; README "Dependencies") checked against pyproject.toml, offline.

- Every dependency of pyproject.toml (the dev extra: of requirements-dev.txt) is locked, at a version its range
  allows, and every locked package carries hashes (pip installs with --require-hashes).
- The dev lock runs on the runtime lock's versions: the tests exercise what the suite runs.
- Honest floors: each lower bound in pyproject.toml is the locked version (what the tests run on), except the
  floors tested apart (STRIPE_FLOOR: the stripe SDK's, tested in a scratch environment; README "Dependencies").
- The two README commands and the image install from the lock.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"
# Floors below the locked version, each tested apart (README "Dependencies" says how).
FLOORS_TESTED_APART: Mapping[str, str] = {"stripe": "15.0.0"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@cache
def locked(path: Path) -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


@cache
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirements(*, dev: bool) -> list[Requirement]:
    listed = project()["optional-dependencies"]["dev"] if dev else project()["dependencies"]
    return [Requirement(text) for text in listed]


def _all_requirements() -> list[tuple[Requirement, Path]]:
    return [(r, RUNTIME_LOCK) for r in requirements(dev=False)] + [(r, DEV_LOCK) for r in requirements(dev=True)]


@pytest.mark.parametrize(
    ("requirement", "lock"), _all_requirements(), ids=lambda value: str(getattr(value, "name", "")) or None
)
def test_every_dependency_is_locked_within_its_range(requirement: Requirement, lock: Path) -> None:
    version = locked(lock).get(canonicalize_name(requirement.name))
    assert version is not None, f"{requirement.name} is not in {lock.name}: run ./scripts/lock.sh"
    assert requirement.specifier.contains(version, prereleases=True), (
        f"{lock.name} holds {requirement.name}=={version}, outside {requirement.specifier}: run ./scripts/lock.sh"
    )


@pytest.mark.parametrize(
    ("requirement", "lock"), _all_requirements(), ids=lambda value: str(getattr(value, "name", "")) or None
)
def test_every_floor_is_a_tested_version(requirement: Requirement, lock: Path) -> None:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==")]
    assert len(floors) == 1, f"{requirement}: one lower bound (>= or ==), the version the tests run on"
    name = canonicalize_name(requirement.name)
    expected = Version(FLOORS_TESTED_APART[name]) if name in FLOORS_TESTED_APART else locked(lock)[name]
    assert floors[0] == expected, (
        f"{requirement.name}: the floor {floors[0]} is not a tested version; the lock runs the tests on {expected} "
        "(raise the floor to it, or test the floor apart and list it in FLOORS_TESTED_APART)"
    )


def test_dev_lock_runs_on_the_runtime_locks_versions() -> None:
    dev = locked(DEV_LOCK)
    different = {
        name: (version, dev.get(name)) for name, version in locked(RUNTIME_LOCK).items() if dev.get(name) != version
    }
    assert different == {}


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=lambda path: path.name)
def test_every_locked_package_has_hashes(lock: Path) -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text(encoding="utf-8"))
    pinned = [block for block in blocks if _PIN.match(block)]
    assert len(pinned) == len(locked(lock))
    assert [block.split()[0] for block in pinned if "--hash=sha256:" not in block] == []


@pytest.mark.parametrize(
    ("script", "lock"),
    [
        ("scripts/test.sh", "requirements-dev.txt"),
        ("scripts/run.sh", "requirements.txt"),
        ("Dockerfile", "requirements.txt"),
    ],
)
def test_install_commands_use_the_lock(script: str, lock: str) -> None:
    text = (ROOT / script).read_text(encoding="utf-8")
    assert f"pip install --require-hashes -r {lock}" in text or f"--require-hashes -r {lock}" in text
    assert "-e '.[dev]'" not in text
    if script != "Dockerfile":
        assert "--no-deps -e ." in text
