#!/usr/bin/env bash
# Set up a fresh machine and run every check CI runs: lint, format, types, the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch first: its CPU build lies on this machine's disk; anything with an open torch range installed
# before it would pull a multi-GB CUDA build.
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e ".[dev]"
# Headless Chromium for the end-to-end report test (skipped with a reason when it cannot be installed).
bash scripts/install_chromium.sh || echo "note: chromium could not be installed; the browser test will be skipped"

echo "== ruff"; $PY -m ruff check src tests benchmarks
$PY -m ruff format --check src tests benchmarks
echo "== mypy"; $PY -m mypy
echo "== pytest"
set +e
$PY -m pytest -n "${TRAINMEDIC_TEST_WORKERS:-2}" -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit code 5)" >&2
  exit 1
fi
exit "$rc"
