#!/usr/bin/env bash
# The main job: set up .venv if needed, then detect bird activity in the bundled sample recordings with the
# bundled default model. Results: OUTDIR/scatterbird.sqlite, windows.csv, detections.csv, Raven tables.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m data.samples >/dev/null
OUT=${1:-out/demo}
exec .venv/bin/scatterbird detect data/samples -o "$OUT" --format all
