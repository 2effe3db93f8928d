#!/usr/bin/env bash
# Install what is missing into ./.venv: torch first (the pinned CPU build, unless a torch is already
# there, e.g. a CUDA build you installed yourself), then pgraft with its dev extra, at the versions in
# constraints.txt that the project is tested with. A second call with nothing new to install takes < 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.pgraft-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
pip install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import pgraft, torch, diffusers, gradio" >/dev/null
echo "$want" > "$stamp"
