#!/usr/bin/env bash
# Install what is missing, then lint, type-check, check the layers (import-linter) and run every test (unit
# and, as root with the engine, integration). In CI the integration tests must run: a missing engine fails them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check composens tests bench
.venv/bin/ruff format --check composens tests bench
.venv/bin/mypy composens
.venv/bin/lint-imports --no-cache
.venv/bin/pytest -q "$@"
