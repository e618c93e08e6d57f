#!/usr/bin/env bash
# The test command: set up .venv, then run the whole suite on the CPU (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash launch/local/setup.sh
exec .venv/bin/python -m pytest -q "$@"
