#!/usr/bin/env bash
# Create the project's virtual environment in .venv if it is missing, and install scatterbird into it.
# Idempotent: a second call only checks that the install is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
# The stamp records what was installed; reinstall when pyproject.toml changes.
stamp=.venv/.scatterbird-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! .venv/bin/python -c "import scatterbird.cli" 2>/dev/null; then
  echo "[setup] installing scatterbird and its dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >&2
  # torch first, pinned to the CPU wheel: an unpinned torch may pull a multi-GB CUDA build.
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.13.0" >&2
  fi
  .venv/bin/python -m pip install -q -e ".[test]" >&2
  touch "$stamp"
fi
