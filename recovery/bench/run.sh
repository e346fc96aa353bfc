#!/usr/bin/env bash
# Builds the verify_backup benchmark in release mode and runs it once.
# DRBOT_BENCH_MB: MB of plain SQL to generate (default 1000); DRBOT_BENCH_ROUNDS: repeats of
# (a) and (b), alternating which goes first (default 2); DRBOT_BENCH_DIR: where the backup store lives (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v pg_ctlcluster >/dev/null && pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
exec cargo bench -p drbot-recovery --bench verify_backup "$@"
