#!/usr/bin/env bash
# The main command: install what is needed, then run the whole suite (embedded PostgreSQL when
# DATABASE_URL is not set). Needs only Python >= 3.11 on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt && .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
exec .venv/bin/python scripts/suite.py "$@"
