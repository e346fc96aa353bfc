#!/usr/bin/env bash
# Benchmark of POST /slack/commands: drbot (every command verified, replay-checked, handled
# and audited) against Slack's official Bolt for JavaScript and Bolt for Python apps with the
# same pre-signed, distinct `/dr status` requests, at 16 and 64 connections, with wrk on the
# same machine. Prints requests/s, p50, p99 and peak RSS of each server, and the harness's
# own floor: nginx answering a fixed 200 to the same requests (the loopback ceiling of
# requests/s, and the p99 that wrk and a server sharing the two cores give by themselves).
#
# Usage: bot/bench/slack/run.sh [seconds per run, default 5]
# DRBOT_BENCH_PEERS=0 skips the Bolt peers (drbot's own figures only, for quick iterations).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/release/drbot
secs=${1:-5}
secret=bench-signing-secret-0123456789
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
echo "== building drbot (release)" >&2
(cd "$root" && cargo build --release -q -p drbot)
echo "== installing Bolt for JavaScript and Bolt for Python into $work" >&2
peers=${DRBOT_BENCH_PEERS:-1}
python3 -m venv "$work/venv"
if [ "$peers" = 1 ]; then
  (cd "$work" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund @slack/bolt@4 >/dev/null)
  "$work/venv/bin/pip" install -q slack_bolt aiohttp fastapi "uvicorn[standard]" cryptography
else
  "$work/venv/bin/pip" install -q cryptography
fi
cp "$here/bolt_app.js" "$here/bolt_app.py" "$work/"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
peak_rss_mb() { local total=0; for p in "$@"; do local kb; kb=$(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); total=$((total + kb)); done; awk -v kb="$total" 'BEGIN { printf "%.1f", kb / 1024 }'; }
sign() { python3 "$here/sign_requests.py" "$secret" "$1" "$2"; }
load() { # port conns file [mode] -> RESULT line
  MODE="${4:-slack}" WRK_THREADS=2 REQUESTS_FILE="$3" wrk -t2 -c"$2" -d"${secs}s" --timeout 5s -s "$here/requests.lua" "http://127.0.0.1:$1" | grep '^RESULT'
}
results=()
record() { # name conns result rss
  local rps p50 p99 errs
  rps=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$3"); p50=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$3")
  p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$3"); errs=$(sed -E 's/.*errors_status=([0-9]+) errors_other=([0-9]+).*/\1+\2/' <<<"$3")
  results+=("$(printf '%-28s %5s %10s %9s %9s %9s %8s' "$1" "$2" "$rps" "$p50" "$p99" "$4" "$errs")")
  echo "$1 c=$2 rps=$rps p50=${p50}ms p99=${p99}ms rss=${4}MB non2xx+errors=$errs" >&2
}
count=$(( secs * 90000 ))

# drbot (Slack and Discord endpoints of one server)
seed=0707070707070707070707070707070707070707070707070707070707070707
discord_key=$("$work/venv/bin/python" "$here/sign_discord.py" "$seed" 1 "$work/probe.txt")
port=$(free_port)
cat > "$work/drbot.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[store]
url = "sqlite://$work/drbot.db"
[slack]
signing_secret = "$secret"
bot_token = "xoxb-bench"
api_base_url = "http://127.0.0.1:9/api"
incident_channel = "C2147483705"
[discord]
public_key = "$discord_key"
bot_token = "bench"
application_id = "1160000000000000000"
api_base_url = "http://127.0.0.1:9/api/v10"
incident_channel = "1200000000000000000"
[[people]]
name = "alice"
roles = ["sre-lead"]
slack = "UALICE"
discord = "2001"
[[people]]
name = "bob"
roles = ["oncall"]
slack = "UBOB"
discord = "2002"
[regions.us-east-1]
role = "primary"
[regions.us-west-2]
role = "secondary"
TOML
# Each load level gets a fresh drbot process and store, so peak RSS is per level.
start_drbot() {
  rm -f "$work"/drbot.db*
  DRBOT_LOG=warn "$bin" --config "$work/drbot.toml" serve 2>>"$work/drbot.log" &
  dpid=$!; pids+=("$dpid"); wait_port "$port"
}
stop_drbot() { kill "$dpid"; wait "$dpid" 2>/dev/null || true; }
for c in 16 64; do
  start_drbot
  sign "$count" "$work/req-drbot-$c.txt"
  r=$(load "$port" "$c" "$work/req-drbot-$c.txt"); record "drbot" "$c" "$r" "$(peak_rss_mb "$dpid")"
  audited=$(DRBOT_LOG=error "$bin" --config "$work/drbot.toml" --json audit --verify | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["rows"], "rows, problems:", len(r["problems"]))')
  echo "drbot audit log after the c=$c run: $audited" >&2
  stop_drbot
done
start_drbot
"$work/venv/bin/python" "$here/sign_discord.py" "$seed" "$count" "$work/req-discord.txt" >/dev/null
r=$(load "$port" 64 "$work/req-discord.txt" discord); record "drbot (Discord interactions)" 64 "$r" "$(peak_rss_mb "$dpid")"
stop_drbot

# nginx answering a fixed 200 with 2 worker processes (as many as drbot's runtime threads)
# and with 1: what this harness gives a server that does no work.
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
sign "$count" "$work/req-nginx.txt"
for w in 2 1; do
  port=$(free_port)
  cat > "$work/nginx.conf" <<NGINX
worker_processes $w;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work;
  server { listen 127.0.0.1:$port; location / { return 200 '{"response_type":"ephemeral","text":"ok"}'; } }
}
NGINX
  "$nginx_bin" -c "$work/nginx.conf"; wait_port "$port"; sleep 0.2
  for c in 16 64; do
    r=$(load "$port" "$c" "$work/req-nginx.txt")
    record "nginx fixed 200 (${w} worker$([ "$w" = 2 ] && echo s))" "$c" "$r" "$(peak_rss_mb $(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")"))"
  done
  "$nginx_bin" -c "$work/nginx.conf" -s stop 2>/dev/null; sleep 0.5
done

if [ "$peers" = 1 ]; then
sign "$count" "$work/req-peers.txt"
# Bolt for JavaScript
port=$(free_port)
(cd "$work" && SIGNING_SECRET=$secret PORT=$port node bolt_app.js >"$work/bolt-js.log" 2>&1) &
jpid=$!; pids+=("$jpid"); wait_port "$port"
npid=$(pgrep -P "$jpid" node || echo "$jpid")
for c in 16 64; do r=$(load "$port" "$c" "$work/req-peers.txt"); record "Bolt JS (HTTPReceiver)" "$c" "$r" "$(peak_rss_mb $npid)"; done
kill "$jpid" $npid 2>/dev/null || true

# Bolt for Python, fastest setup: AsyncApp + FastAPI, uvicorn with 2 workers
port=$(free_port)
(cd "$work" && SIGNING_SECRET=$secret "$work/venv/bin/uvicorn" bolt_app:api --workers 2 --port "$port" --log-level warning --no-access-log >"$work/bolt-py.log" 2>&1) &
ppid_=$!; pids+=("$ppid_"); wait_port "$port"; sleep 2
for c in 16 64; do
  r=$(load "$port" "$c" "$work/req-peers.txt")
  # The uvicorn master and its worker processes (workers are spawned children).
  upids=$( { pgrep -f "uvicorn bolt_app:api"; for m in $(pgrep -f "uvicorn bolt_app:api"); do pgrep -P "$m"; done; } | sort -u | tr '\n' ' ')
  record "Bolt Python (uvicorn x2)" "$c" "$r" "$(peak_rss_mb $upids)"
done
pkill -f "uvicorn bolt_app:api" || true
fi

echo
printf '%-28s %5s %10s %9s %9s %9s %8s\n' server conns req/s p50_ms p99_ms rss_MB errors
printf '%s\n' "${results[@]}"
