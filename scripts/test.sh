#!/usr/bin/env bash
# Quick start 2: install, lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export BASTION_OFFLINE=1  # tests never send traffic anywhere but 127.0.0.1
bash scripts/bootstrap.sh
uv run --frozen ruff check bastion tests bench
uv run --frozen ruff format --check bastion tests bench
uv run --frozen mypy bastion
uv run --frozen pytest "$@"
