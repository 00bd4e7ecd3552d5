-- wrk script for the receive benchmarks: cycles through requests pre-signed by ch-bench-sign
-- (unique webhook-id and ActiveCallId each), each wrk thread through its own share of them,
-- and counts the answers by status: 202 (new, acknowledged), 200 (duplicate), other. A line's
-- optional fifth field (ch-bench-sign --hmac-secret) goes in X-Signature.
-- usage: wrk -t T -c C -d D -s receiver.lua URL -- DATA_FILE T
local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

function init(args)
   local path, nthreads = args[1], tonumber(args[2])
   ids, stamps, sigs, calls, hmacs = {}, {}, {}, {}, {}
   local n, lineno = 0, 0
   for line in io.lines(path) do
      lineno = lineno + 1
      if lineno == 1 then
         prefix = line
      elseif lineno == 2 then
         suffix = line
      elseif (lineno - 3) % nthreads == thread_index then
         local id, ts, sig, call, rest = line:match("^(%S+) (%S+) (%S+) (%S+)(.*)$")
         n = n + 1
         ids[n], stamps[n], sigs[n], calls[n] = id, ts, sig, call
         hmacs[n] = rest:match("^ (%S+)$")
      end
   end
   count, i, wrapped = n, 0, 0
   c202, c200, c2xx, cother = 0, 0, 0, 0
end

function request()
   i = i + 1
   if i > count then
      i = 1
      wrapped = wrapped + 1
   end
   local headers = {
      ["Content-Type"] = "application/json",
      ["webhook-id"] = ids[i],
      ["webhook-timestamp"] = stamps[i],
      ["webhook-signature"] = sigs[i],
      ["X-Call-Event"] = "end-call",
      ["User-Agent"] = "callhook-bench/wrk",
   }
   if hmacs[i] then
      headers["X-Signature"] = hmacs[i]
   end
   return wrk.format("POST", nil, headers, prefix .. calls[i] .. suffix)
end

function response(status, headers, body)
   if status == 202 then
      c202 = c202 + 1
   elseif status == 200 then
      c200 = c200 + 1
   elseif status >= 200 and status < 300 then
      c2xx = c2xx + 1
   else
      cother = cother + 1
   end
end

function done(summary, latency, requests)
   local t = { c202 = 0, c200 = 0, c2xx = 0, cother = 0, wrapped = 0 }
   for _, thread in ipairs(threads) do
      for k, _ in pairs(t) do
         t[k] = t[k] + (thread:get(k) or 0)
      end
   end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d seconds=%.3f c202=%d c200=%d c2xx=%d other=%d wrapped=%d " ..
      "socket_errors=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration / 1e6, t.c202, t.c200, t.c2xx, t.cother, t.wrapped,
      e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99),
      latency.max))
end
