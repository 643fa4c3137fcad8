#!/usr/bin/env bash
# The main command: install what is needed, then run the whole suite (embedded PostgreSQL when
# DATABASE_URL is not set). Needs only Python >= 3.11 on the machine.
#
# A suite already running (this folder's lock, or its ports taken) is refused at once with one line,
# before anything is installed, bound or printed. The installer is quiet; its output is shown only
# when it fails. The banner comes when every service answers its health check (scripts/suite.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" scripts/suite.py --preflight
if ! install_log="$(
    { [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv; } 2>&1 &&
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt 2>&1 &&
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e . 2>&1
)"; then
    printf '%s\n' "$install_log" >&2
    echo "run.sh: installing the suite into .venv failed (the installer's output is above)" >&2
    exit 1
fi
exec .venv/bin/python scripts/suite.py "$@"
