#!/usr/bin/env bash
# Regenerate the lock from pyproject.toml (README "Dependencies"): requirements.txt (what the suite runs on)
# and requirements-dev.txt (the same versions plus the dev extra: what the tests run on). One resolution for
# every platform and every Python >= 3.11 (uv's --universal), each file pinned with hashes and installed by
# plain pip (--require-hashes): ./scripts/test.sh and ./scripts/run.sh do that.
#
#   ./scripts/lock.sh                      keep the locked versions that still satisfy pyproject.toml
#   ./scripts/lock.sh --upgrade            take the newest versions pyproject.toml allows
#   ./scripts/lock.sh --upgrade-package X  move one package
#
# uv is installed into .venv at a pinned version when missing; PyPI must be reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
UV_VERSION="0.13.9"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
compile=(.venv/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes --quiet
  --custom-compile-command ./scripts/lock.sh)
"${compile[@]}" "$@" -o requirements.txt
# The dev lock is constrained by the runtime lock: the tests run on exactly the versions the suite runs on.
"${compile[@]}" "$@" --extra dev --constraint requirements.txt -o requirements-dev.txt
echo "locked: requirements.txt ($(grep -c '^[a-zA-Z]' requirements.txt) packages)," \
  "requirements-dev.txt ($(grep -c '^[a-zA-Z]' requirements-dev.txt) packages)"
