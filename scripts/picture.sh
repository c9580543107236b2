#!/usr/bin/env bash
# Redraw docs/seed-lab.svg, the README's picture of the demo lab, from docker-compose.yml.
# Needs .venv, graphviz's `dot` and the docker CLI with compose v2 (for `docker compose config`);
# scripts/bootstrap.sh installs all three. No engine, no root: nothing is brought up.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/composens -f docker-compose.yml graph --format svg -o docs/seed-lab.svg
echo "picture: wrote docs/seed-lab.svg" >&2
