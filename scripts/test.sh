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
.venv/bin/lint-imports  # the layers as contracts: [tool.importlinter] in pyproject.toml
# The contract: buf lint, and buf breaking against the proto on main (buf.yaml records each exception).
# The buf CLI comes from the npm registry, pinned, into .tools/ (not committed).
BUF_VERSION=1.75.0
BUF=.tools/node_modules/.bin/buf
BUF_AGAINST_REF="${BUF_AGAINST_REF:-main}"
if ! command -v npm >/dev/null; then
  echo "buf lint / buf breaking: skipped, npm not found (install Node.js with npm)"
else
  [ -x "$BUF" ] && [ "$("$BUF" --version)" = "$BUF_VERSION" ] \
    || npm install --prefix .tools --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION"
  "$BUF" lint
  if git rev-parse --verify --quiet "$BUF_AGAINST_REF^{commit}" >/dev/null; then
    against="$(mktemp -d)"
    git archive "$BUF_AGAINST_REF" protos | tar -x -C "$against"
    cp buf.yaml "$against/"
    "$BUF" breaking --against "$against"
    rm -rf "$against"
    echo "buf lint, buf breaking against $BUF_AGAINST_REF: no findings"
  else
    echo "buf breaking: skipped, no $BUF_AGAINST_REF to compare against (set BUF_AGAINST_REF)"
  fi
fi
.venv/bin/python -m pytest "$@"
# The example app's browser test (tests/examples/): Node.js >= 20 with npm, and a Chromium
# (Debian: apt-get install chromium; elsewhere set CHROMIUM to a Chrome or Chromium binary).
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ "$#" -gt 0 ]; then
  echo "browser test (examples/nextjs): skipped, test arguments given; run it alone with: node --test tests/examples/"
elif ! command -v npm >/dev/null || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
  echo "browser test (examples/nextjs): skipped, Node.js >= 20 with npm not found (see README: the example app)"
elif [ ! -x "$CHROMIUM" ]; then
  echo "browser test (examples/nextjs): skipped, no Chromium at $CHROMIUM (apt-get install chromium, or set CHROMIUM)"
else
  (cd examples/nextjs && npm ci --no-audit --no-fund --loglevel=error && NEXT_TELEMETRY_DISABLED=1 npx next build)
  CHROMIUM="$CHROMIUM" node --test tests/examples/
fi
