#!/usr/bin/env bash
# Set up (editable install with the test extras) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[test]'
python3 -m pytest -q -n auto --durations=20 "$@"  # pytest-xdist: one worker per core; the 20 slowest tests listed
