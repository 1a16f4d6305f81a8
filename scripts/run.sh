#!/usr/bin/env bash
# Runs the platform on its embedded defaults: local Kafka broker, simulated quote feed (Finnhub when
# FINNHUB_API_KEY is set), local folder lake, DuckDB warehouse, Dagster webserver + daemon on SQLite.
# Arguments go to `stock-platform run` (for example --minutes 3 to stop after three minutes reach gold).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec stock-platform run "$@"
