#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv. Idempotent.
# torch 2.13.0 comes first: its CPU wheel lies on this machine's disk, and the project's own
# requirement is a range it satisfies, so pip never reaches for a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0"
# The tested versions of every other package (see the file): a fresh machine gets what CI ran.
.venv/bin/python -m pip install -q -c launch/local/constraints.txt -e ".[dev]"
