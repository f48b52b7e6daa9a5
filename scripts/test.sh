#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, lint, then run all of it, on Python 3.12.
#   bash scripts/test.sh [pytest args]        (MALLE_PYTHON=/path/to/python3.12 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${MALLE_PYTHON:-python3.12}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
  echo "scripts/test.sh: Malle needs Python 3.12, and '$PY' is missing or another version." >&2
  echo "Install it (for example: pyenv install 3.12) or set MALLE_PYTHON=/path/to/python3.12." >&2
  exit 1
fi

# Debian's headless Chromium for the browser test and the PDF report (Playwright cannot download a browser
# here), an emoji font so its screenshots show the dashboard's markers, libmagic for AugLy's composites, and
# poppler's pdftotext/pdfinfo for the report's tests.
if ! command -v chromium >/dev/null 2>&1 || [ ! -d /usr/share/fonts/truetype/noto ] \
    || [ -z "$(ldconfig -p | grep 'libmagic\.so\.1')" ] || ! command -v pdftotext >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-noto-color-emoji libmagic1 poppler-utils >/dev/null
fi

# Malle itself, editable, with every extra (pyproject.toml declares the dependencies).
"$PY" -m pip install -q -e ".[all,dev,docs]"
# The configured linter (pyproject.toml's [tool.ruff]) first: a dirty tree fails the run before any test.
"$PY" -m ruff check .
# The type checker (pyproject.toml's [tool.mypy]) on the package.
"$PY" -m mypy malle
# The docs site, strictly: a broken link or a reference to a missing name fails the run.
NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict -q -d "$(mktemp -d)"
"$PY" -m pytest "$@"
