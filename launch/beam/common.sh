#!/usr/bin/env bash
# Shared by the Beam submission scripts: which corpus entry point to run, and the Python to use.
# Usage (from a submission script): source "$(dirname "$0")/common.sh" "$@"
# Every pipeline's Beam passes run on the chosen runner; the command itself runs here. For recall
# that includes fastText training between passes: run it on a machine sized for the training
# sample (~1M documents at paper scale), see beam_pipelines/recall/__main__.py.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PIPELINE=${1:-}
case "$PIPELINE" in
  prepare|dedup|recall|decontaminate|tokenize) shift ;;
  *) echo "usage: $0 {prepare|dedup|recall|decontaminate|tokenize} [hydra overrides...]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-$REPO_ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OVERRIDES=("$@")
submit() {
  echo "+ $PYTHON -m beam_pipelines.$PIPELINE $*" >&2
  cd "$REPO_ROOT" && exec "$PYTHON" -m "beam_pipelines.$PIPELINE" "$@"
}
