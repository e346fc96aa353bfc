#!/usr/bin/env bash
# Benchmark of the failover on the `drbot demo` environment: runs `drbot demo --json` N times
# (each a fresh local two-region environment: PostgreSQL 15 primary and streaming replica,
# apex-api per region, file DNS) and aggregates the drill of each run. Prints, median and
# max over the runs, each drill step's duration (and without its configured wait: the
# disaster's warmup, the health check's intervals), the driver's own overhead between steps,
# and the time from approval to health green on the DR side without the configured waits.
# Goal: under 3 s.
#
# Usage: bot/bench/demo/run.sh [runs, default 10]
# DRBOT_BENCH_PROFILE=debug uses the debug build instead of a release build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
runs=${1:-10}
profile=${DRBOT_BENCH_PROFILE:-release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building drbot ($profile)" >&2
if [ "$profile" = release ]; then
  (cd "$root" && cargo build --release -q -p drbot --bin drbot)
else
  (cd "$root" && cargo build -q -p drbot --bin drbot)
fi
target=${CARGO_TARGET_DIR:-$root/target}
bin="$target/$profile/drbot"

for i in $(seq 1 "$runs"); do
  if ! "$bin" demo --json >"$work/run$i.json" 2>"$work/run$i.log"; then
    echo "run $i failed:" >&2
    tail -40 "$work/run$i.log" >&2
    exit 1
  fi
  python3 - "$work/run$i.json" "$i" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1])); f = r["figures"]
print(f"run {sys.argv[2]}: RTO {f['rto_seconds']:.2f} s, waits {f['configured_waits_seconds']:.2f} s, "
      f"without waits {f['failover_seconds_excluding_waits']:.2f} s, RPO {f['rpo_rows']} rows")
PY
done

python3 - "$work" "$runs" <<'PY'
import json, statistics, sys, pathlib
work, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
reports = [json.load(open(work / f"run{i}.json")) for i in range(1, runs + 1)]

rows = {}  # (n, name) -> [(seconds, seconds without the step's configured wait)]
overhead, rto, waits, without, rpo = [], [], [], [], []
for r in reports:
    f, steps = r["figures"], r["drill"]["steps"]
    for s in steps:
        d, w = s["duration_ms"] / 1000, s["configured_wait_ms"] / 1000
        rows.setdefault((s["n"], s["name"]), []).append((d, d - w))
    # Approval -> health green covers the steps after the preflight up to the health check.
    first = next(i for i, s in enumerate(steps) if s["kind"] == "incident")
    last = next(i for i, s in enumerate(steps) if s["kind"] == "http_check")
    in_window = sum(s["duration_ms"] for s in steps[first:last + 1]) / 1000
    overhead.append(f["rto_seconds"] - in_window)
    rto.append(f["rto_seconds"])
    waits.append(f["configured_waits_seconds"])
    without.append(f["failover_seconds_excluding_waits"])
    rpo.append(f["rpo_rows"])

def stat(xs):
    return f"{statistics.median(xs):8.3f} {max(xs):8.3f}"

print(f"\ndrbot demo failover, {runs} runs (seconds, median and max)")
print(f"{'drill step':<70} {'median':>8} {'max':>8}   {'without configured wait':>17}")
for (n, name), xs in sorted(rows.items()):
    raw, net = [x for x, _ in xs], [y for _, y in xs]
    extra = f"   {stat(net)}" if raw != net else ""
    print(f"{n:>2}. {name:<66} {stat(raw)}{extra}")
print(f"{'driver between steps (claim after approval, journal writes)':<70} {stat(overhead)}")
print(f"{'approval -> health green (RTO)':<70} {stat(rto)}")
print(f"{'  configured waits (disaster warmup, health-check intervals)':<70} {stat(waits)}")
print(f"{'  approval -> health green without configured waits':<70} {stat(without)}")
print(f"RPO rows: median {statistics.median(rpo)}, max {max(rpo)}")
worst = max(without)
print(f"goal: under 3 s without configured waits: {'PASS' if worst < 3 else 'FAIL'} (max {worst:.3f} s)")
PY
