#!/usr/bin/env bash
# Set up a fresh machine and run the main job: `trainmedic demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e .
exec trainmedic demo "$@"
