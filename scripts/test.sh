#!/usr/bin/env bash
# The whole check: install what is missing, then ruff (lint + format), mypy and the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k acceptance`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
ruff check pgraft tests bench app.py
ruff format --check pgraft tests bench app.py
mypy
python -m pytest -q "$@"
# With no pytest arguments: the slow tests (about 8 minutes on 2 cores), then the browser tests (Playwright
# driving the system's Chromium) when Chromium is installed.
if [ $# -eq 0 ]; then
  python -m pytest -q -m "slow and not e2e and not gpu"
  if command -v chromium >/dev/null 2>&1; then
    python -m pytest -q -m "e2e and not gpu"
  fi
fi
