#!/usr/bin/env bash
# Quick start 1: install, then
#   1. backtest the Avellaneda-Stoikov market maker on the real Binance USDT-M BTCUSDT L2 capture in
#      ../shared/data, print its report and write report.html;
#   2. paper-trade (`bastion run`) for 30 s against the local Kraken-protocol exchange replaying the
#      real Binance spot BTCUSDT capture from ../shared/data at 10x: the same order gateway, journal,
#      breaker, reconciliation and parity watchdog a live run uses, on 127.0.0.1 with no keys.
# Arguments go to `bastion backtest`; --json also makes the paper run print JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
uv run --frozen bastion backtest "$@"
paper=(--seconds 30 --exchange-speed 10 --market-data replay)
for arg in "$@"; do
  if [ "$arg" = "--json" ]; then paper+=(--json); fi
done
state="$(mktemp -d "${TMPDIR:-/tmp}/bastion-demo-paper.XXXXXX")"
echo "paper run: state in $state" >&2
exec uv run --frozen bastion run "${paper[@]}" --state-dir "$state"
