#!/usr/bin/env bash
# Customer email through the whole product: `drbot serve` sends `/dr notify customers
# dr-activated` to N subscribers (default 100,000) from its outbox (SQLite store, campaign rows,
# the bulk engine) to the loopback SMTP sink of notifier's email_send bench; the sink's maximum
# is measured in the same run with that bench's minimal pipelined sender, before and after.
# Prints messages/s (the sink's clock: first MAIL to last accepted message), the share of the
# sink's maximum, drbot's peak RSS, and duplicates and missing messages by Message-ID.
#
# Usage: bot/bench/email/run.sh [subscribers, default 100000] [connections, default 16]
# DRBOT_LOG sets serve's log filter (default warn); DRBOT_BENCH_LOG=path keeps serve's log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
n=${1:-100000}
conns=${2:-16}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  [ -z "${DRBOT_BENCH_LOG:-}" ] || cp "$work/serve.log" "$DRBOT_BENCH_LOG" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building drbot (release) and the email_send bench" >&2
(cd "$root" && cargo build --release -q -p drbot --locked)
bench=$(cd "$root" && cargo bench -p drbot-notifier --bench email_send --no-run --locked 2>&1 |
  sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "email_send bench binary not found" >&2; exit 1; }
bin=$target/release/drbot

coproc SINK { "$bench" sink; }
pids+=("$SINK_PID")
read -r line <&"${SINK[0]}"
port=${line#PORT }
# `messages unique duplicates seconds` since the previous call.
stats() { echo stats >&"${SINK[1]}"; read -r line <&"${SINK[0]}"; echo "$line"; }
rate() { awk -v m="$1" -v s="$4" 'BEGIN { printf "%.0f", (s > 0 ? m / s : 0) }'; }

minimal() {
  "$bench" raw "$port" "$n" "$conns" >/dev/null
  local s; s=$(stats)
  echo "minimal sender: $(rate $s) msg/s ($s)" >&2
  rate $s
}

echo "== sink maximum, before" >&2
before=$(minimal)

http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/drbot.toml" <<EOF
builtin_runbooks = ["notify-customers"]

[server]
listen = "127.0.0.1:$http"
public_url = "https://status.example.com"

[store]
url = "sqlite://$work/drbot.db"

[[people]]
name = "olivia"
roles = ["oncall", "sre-lead"]

[[people]]
name = "sam"
roles = ["sre-lead"]

[regions.us-east-1]
role = "primary"

[regions.us-west-2]
role = "secondary"

[email]
smtp_url = "smtp://127.0.0.1:$port"
from = "Example Status <status@example.com>"
max_connections = $conns
EOF
dr() { "$bin" --config "$work/drbot.toml" "$@"; }

echo "== importing $n subscribers (every third without a name)" >&2
awk -v n="$n" 'BEGIN { print "email,name"; for (i = 0; i < n; i++) printf "customer%07d@customer.example,%s\n", i, (i % 3 == 2 ? "" : "Customer " i) }' >"$work/subscribers.csv"
dr subscribers import "$work/subscribers.csv" >/dev/null

DRBOT_LOG=${DRBOT_LOG:-warn} "$bin" --config "$work/drbot.toml" serve >"$work/serve.log" 2>&1 &
serve=$!
pids+=("$serve")
for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$http") 2>/dev/null && break; sleep 0.05; done

state() { dr show "$1" --json | python3 -c "import json,sys; v=json.load(sys.stdin); print($2)" 2>/dev/null || true; }
wait_for() { # run expression expected seconds
  for _ in $(seq 1 $(($4 * 10))); do
    [ "$(state "$1" "$2")" = "$3" ] && return 0
    sleep 0.1
  done
  echo "timed out waiting for $2 = $3" >&2; tail -20 "$work/serve.log" >&2; exit 1
}
dr cmd --as olivia "/dr incident open --impact major Database outage" >/dev/null
run=$(dr cmd --as olivia "/dr notify customers dr-activated" | sed -n 's/^Run \([0-9]*\).*/\1/p' | head -1)
wait_for "$run" 'v["steps"][0]["state"]' succeeded 120
stats >/dev/null
start=$(date +%s.%N)
dr cmd --as sam "/dr approve $run" >/dev/null
wait_for "$run" 'v["run"]["state"]' succeeded 1200
end=$(date +%s.%N)
s=$(stats)
hwm=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$serve/status")
summary=$(state "$run" 'v["steps"][1]["summary"]')

echo "== sink maximum, after" >&2
after=$(minimal)

read -r got unique dups secs <<<"$s"
product=$(rate $s)
max=$((before > after ? before : after))
echo "customer email through drbot serve's outbox: $n subscribers, $conns connections"
echo "step: $summary; approval to run succeeded: $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"
echo "sink got $got messages ($unique unique, $dups duplicates) in $secs s = $product msg/s"
echo "sink maximum (minimal sender, best of before/after): $max msg/s (before $before, after $after)"
echo "ratio: $(awk -v p="$product" -v m="$max" 'BEGIN { printf "%.1f", 100 * p / m }') % of the sink maximum (goal >= 80 %)"
echo "drbot serve peak RSS: $hwm MB (goal < 100 MB)"
echo "duplicates $dups, missing $((n - unique))"
