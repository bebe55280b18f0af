#!/usr/bin/env bash
# Creates .venv with the pinned environment and vlmattn installed in editable mode. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.vlmattn-installed
if [ ! -f "$stamp" ] || [ envs/requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -r envs/requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  touch "$stamp"
fi
