#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run all of it.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's headless Chromium for the browser test (Playwright cannot download a browser here),
# and an emoji font so its screenshots show the dashboard's markers.
if ! command -v chromium >/dev/null 2>&1 || [ ! -d /usr/share/fonts/truetype/noto ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
fi

python -m pip install -q -r requirements-dev.txt
python -m pytest "$@"
