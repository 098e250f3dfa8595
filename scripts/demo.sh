#!/usr/bin/env bash
# Quickstart command 1: set everything up and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/spinetrack quickstart "$@"
