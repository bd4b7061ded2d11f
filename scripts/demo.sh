#!/usr/bin/env bash
# The main job: set up .venv if needed, then process the bundled sample recordings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m data.samples >/dev/null
OUT=${1:-out/demo}
exec .venv/bin/scatterbird features data/samples -o "$OUT"
