-- wrk script for bench/single-query: GET WRK_PATH_PREFIX<random id>, the id
-- drawn uniformly from 1..WRK_ROWS for every request (TechEmpower's "single
-- query" test). The summary is report.lua's (one BENCH_JSON line: exact
-- percentiles, errors), loaded from beside this file; then one line
--   BENCH_NON200 <n> {"<status>":<n>,...}
-- with the answers whose status was not 200, by status (wrk itself counts
-- only those of 400 and above, in one number). WRK_CHECK_STATUS=0 leaves
-- the count out, and with it wrk's per-response callback (the headers
-- parsed into a Lua table).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
local report = done

local rows = tonumber(os.getenv("WRK_ROWS") or "10000")
local prefix = os.getenv("WRK_PATH_PREFIX") or "/api/v1/notes/"
local check = os.getenv("WRK_CHECK_STATUS") ~= "0"

-- setup runs in the main Lua state, once per thread, before the thread's
-- init: each thread gets its own number, hence its own random sequence.
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

init = function(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
  non200 = {}
end

request = function()
  return wrk.format("GET", prefix .. math.random(rows))
end

if check then
  response = function(status, headers, body)
    if status ~= 200 then
      non200[status] = (non200[status] or 0) + 1
    end
  end
end

done = function(summary, latency, requests)
  report(summary, latency, requests)
  if check then
    local n, by_status = 0, {}
    for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("non200") or {}) do
        n = n + count
        by_status[status] = (by_status[status] or 0) + count
      end
    end
    local parts = {}
    for status, count in pairs(by_status) do
      table.insert(parts, string.format('"%d":%d', status, count))
    end
    io.write(string.format("BENCH_NON200 %d {%s}\n", n, table.concat(parts, ",")))
  end
end
