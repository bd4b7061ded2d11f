#!/usr/bin/env bash
# The main job: set up .venv if needed, then detect bird activity in the bundled sample recordings with the
# bundled default model. Results: OUTDIR/scatterbird.sqlite, windows.csv, detections.csv, Raven tables.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
SAMPLES=$(.venv/bin/python -m scatterbird.data.samples)  # generated once into the user cache folder
OUT=${1:-out/demo}
exec .venv/bin/scatterbird detect "$SAMPLES" -o "$OUT" --format all
