#!/usr/bin/env bash
# The test command: install what is needed, check generated code, lint, type-check, run every test.
# Tests use the PostgreSQL on 127.0.0.1:5432 when it answers, an embedded one otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The locked versions (requirements-dev.txt, hashes checked), then the project itself on top of them.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/ruff check .
.venv/bin/mypy services scripts
.venv/bin/python -m pytest "$@"
