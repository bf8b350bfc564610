-- wrk script: POST /v1/tasks with an `echo` task (bench/ab.sh's external-client check).
-- wrk -t2 -c64 -d10s -s bench/submit.lua http://127.0.0.1:PORT
wrk.method = "POST"
wrk.path = "/v1/tasks"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"agent":"echo","input":"x"}'

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("wrk: %d requests, %d non-2xx, %.0f req/s, p99 %.2f ms\n",
    summary.requests, non2xx, summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000))
end
