#!/usr/bin/env bash
# Quick start 1: install, then backtest the Avellaneda-Stoikov market maker on the real Binance
# USDT-M BTCUSDT L2 capture in ../shared/data, print its report and write report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec uv run --frozen bastion backtest "$@"
