-- wrk script: posts the request mix round-robin, as the API server posts AdmissionReviews.
-- Arguments after `--` are the JSON body files.
local bodies, sent = {}, 0
local headers = {["Content-Type"] = "application/json", ["User-Agent"] = "kube-apiserver-admission",
                 ["Accept-Encoding"] = "gzip"}

init = function(args)
  for _, path in ipairs(args) do
    local f = assert(io.open(path, "rb"))
    table.insert(bodies, f:read("*a"))
    f:close()
  end
end

request = function()
  sent = sent + 1
  return wrk.format("POST", "/mutate?timeout=5s", headers, bodies[(sent % #bodies) + 1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
