-- wrk script: each thread sends its own slice of the pre-signed requests, in order, once each.
-- Set REQUESTS_FILE (and MODE=discord for Discord interactions) in the environment.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  nthreads = counter
  reqs = {}
  local n = 0
  local i = 0
  for line in io.lines(os.getenv("REQUESTS_FILE")) do
    if i % nthreads_total() == tid then
      local ts, sig, body = line:match("^(%S+) (%S+) (.*)$")
      n = n + 1
      if os.getenv("MODE") == "discord" then
        reqs[n] = wrk.format("POST", "/discord/interactions", {
          ["Content-Type"] = "application/json",
          ["X-Signature-Timestamp"] = ts,
          ["X-Signature-Ed25519"] = sig,
        }, body)
      else
        reqs[n] = wrk.format("POST", "/slack/commands", {
          ["Content-Type"] = "application/x-www-form-urlencoded",
          ["X-Slack-Request-Timestamp"] = ts,
          ["X-Slack-Signature"] = sig,
        }, body)
      end
    end
    i = i + 1
  end
  total = n
  idx = 0
end

function nthreads_total()
  return tonumber(os.getenv("WRK_THREADS") or "2")
end

function request()
  idx = idx + 1
  if idx > total then
    -- Out of fresh requests: wrap around (replays would be refused with 401 by drbot,
    -- so size the file for the run; non-2xx answers are reported by wrk).
    idx = 1
  end
  return reqs[idx]
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f errors_status=%d errors_other=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
