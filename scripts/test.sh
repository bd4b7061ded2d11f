#!/usr/bin/env bash
# The test command: set up .venv if needed, then run the test suite with pytest.
#   scripts/test.sh          the quick suite (tests marked `slow` are skipped; a few minutes on 2 cores)
#   scripts/test.sh --all    everything, as CI runs it
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
select=(-m "not slow")
args=()
for a in "$@"; do
  if [ "$a" = "--all" ]; then select=(); else args+=("$a"); fi
done
exec .venv/bin/python -m pytest "${select[@]}" "${args[@]}"
