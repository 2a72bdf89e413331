-- Shared by the scenario scripts (each loads it with dofile from this folder).
local lib = {}

-- The non-empty lines of a file.
function lib.lines(path)
  local t = {}
  for line in io.lines(path) do
    if #line > 0 then t[#t + 1] = line end
  end
  assert(#t > 0, "no lines in " .. path)
  return t
end

-- Creates an empty file: bench/run ends a warm-up once every credential was
-- sent (the session cache is then warm).
function lib.touch(path)
  local f = io.open(path, "w")
  if f then f:close() end
end

-- wrk's done(): the summary as one JSON line that bench/run parses.
-- `status_errors` counts 4xx and 5xx answers.
function lib.report(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, '
      .. '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

return lib
