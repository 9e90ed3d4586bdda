-- wrk script for bench.load: POST /sentiment with JSON bodies cycled from a file (one
-- body per line), given after `--`:  wrk -t1 -c32 -d5s --latency -s wrk_bodies.lua URL -- FILE
-- done() prints one line "WRK_JSON {...}": requests, duration, latency percentiles (us)
-- and the error counts, non-2xx included (wrk counts statuses >= 400 in errors.status;
-- response() counts the 1xx and 3xx ones wrk does not).
local requests_pre = {}
local i = 0
other_status = 0  -- global: done() reads it from each thread's state with thread:get
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  local path = args[1]
  local f = assert(io.open(path, "r"), "cannot open the bodies file " .. tostring(path))
  for line in f:lines() do
    if #line > 0 then
      requests_pre[#requests_pre + 1] = wrk.format(
        "POST", "/sentiment", {["Content-Type"] = "application/json"}, line)
    end
  end
  f:close()
  assert(#requests_pre > 0, "no bodies in " .. path)
end

function request()
  i = i % #requests_pre + 1
  return requests_pre[i]
end

function response(status, headers, body)
  if status < 200 or (status >= 300 and status < 400) then
    other_status = other_status + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local other = 0
  for _, t in ipairs(threads) do
    other = other + (t:get("other_status") or 0)
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"status_4xx_5xx": %d, "status_other_non_2xx": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, e.status, other))
end
