#!/usr/bin/env bash
# Install what is missing, then launch the pgraft app on the embedded default. Arguments go to app.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
exec python app.py "$@"
