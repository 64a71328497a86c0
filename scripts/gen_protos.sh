#!/bin/sh
# Regenerate serving/generated/ from protos/ (see serving/codegen.py).
# Usage: scripts/gen_protos.sh   (uses $PYTHON, else .venv/bin/python, else python)
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" -m serving.codegen "$@"
