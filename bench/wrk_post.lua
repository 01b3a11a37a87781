-- wrk script: post the signed callbacks of a file, each once, then print a summary.
-- Each line of the file is: path-and-query TAB signature TAB form body.
-- Arguments after wrk's "--": the file, and how many threads wrk runs (-t).
-- Thread k of n posts lines k, k+n, k+2n, ...; past the end it starts over
-- (the bridge then counts duplicates, which still cost it a full callback).

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  requests = {}
  local threads = tonumber(args[2])
  local step = 0
  for line in io.lines(args[1]) do
    if step % threads == id then
      local path, signature, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", path, {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Twilio-Signature"] = signature,
      }, body)
    end
    step = step + 1
  end
  index = 0
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local non_2xx = summary.errors.status
  local socket_errors = summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %f, "p50_us": %f, "p99_us": %f, '
      .. '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, seconds, latency:percentile(50), latency:percentile(99),
    non_2xx, socket_errors))
end
