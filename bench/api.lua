-- wrk script for `make bench`: one POST /api/v1 per request, form-encoded like the ecosystem's
-- clients, and a correctness count of every response.
--
-- Configured by environment variables (set by bench/run.py):
--   BENCH_MODE      bare | balance | services | add | status | status100
--   BENCH_KEYS      file with one raw API key per line (balance, services, add, bare)
--   BENCH_KEY_COUNT how many of those keys to rotate over (default: all)
--   BENCH_STATUS    file with "key ORD-a,ORD-b,..." lines (status, status100)
--   BENCH_SERVICES  file with the service ids `add` may use, one per line
--   BENCH_NONCE     makes `add` targets unique across runs on the same database copy
--   BENCH_OUT       file the summary JSON is written to
--
-- A response counts as bad when its status is not 2xx or, where success was expected, its body
-- carries an "error" key (the API reports its errors as HTTP 200 with {"error", "code"}).

local mode = os.getenv("BENCH_MODE") or "balance"
local threads = {}
local counter = 0

local function lines(path)
  local out = {}
  if path == nil or path == "" then return out end
  for line in io.lines(path) do
    if line ~= "" then out[#out + 1] = line end
  end
  return out
end

local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function setup(thread)
  thread:set("id", #threads + 1)
  threads[#threads + 1] = thread
end

function init(args)
  ok_count, bad_status, bad_body, first_bad = 0, 0, 0, nil
  local limit = tonumber(os.getenv("BENCH_KEY_COUNT") or "0")
  keys = lines(os.getenv("BENCH_KEYS"))
  if limit > 0 and limit < #keys then
    local kept = {}
    for i = 1, limit do kept[i] = keys[i] end
    keys = kept
  end
  status_lines = {}
  for _, line in ipairs(lines(os.getenv("BENCH_STATUS"))) do
    local key, ids = string.match(line, "^(%S+) (%S+)$")
    local first = string.match(ids, "^([^,]+)")
    status_lines[#status_lines + 1] = {key = key, ids = ids, first = first}
  end
  service_ids = lines(os.getenv("BENCH_SERVICES"))
  nonce = os.getenv("BENCH_NONCE") or tostring(os.time())
  -- each wrk thread walks its own stride through the keys
  counter = (id or 1) * 7919
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  counter = counter + 1
  local body
  if mode == "status" or mode == "status100" then
    local entry = status_lines[counter % #status_lines + 1]
    local ids = mode == "status" and ("order=" .. entry.first) or ("orders=" .. entry.ids)
    body = "action=status&key=" .. entry.key .. "&" .. ids
  else
    local key = keys[counter % #keys + 1]
    if mode == "add" then
      local service = service_ids[(counter * 13) % #service_ids + 1]
      local link = "https://www.instagram.com/p/" .. nonce .. "-" .. (id or 1) .. "-" .. counter
      body = "action=add&key=" .. key .. "&service=" .. service .. "&link=" .. urlencode(link)
             .. "&quantity=1000"
    elseif mode == "services" then
      body = "action=services&key=" .. key
    else -- balance and bare send the same bytes
      body = "action=balance&key=" .. key
    end
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad_status = bad_status + 1
    if first_bad == nil then first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 200) end
  elseif string.find(body, '"error"', 1, true) then
    bad_body = bad_body + 1
    if first_bad == nil then first_bad = string.sub(body, 1, 200) end
  else
    ok_count = ok_count + 1
  end
end

local function json_string(s)
  if s == nil then return "null" end
  s = string.gsub(s, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end)
  return '"' .. s .. '"'
end

function done(summary, latency, requests)
  local ok, bstatus, bbody, first = 0, 0, 0, nil
  for _, thread in ipairs(threads) do
    ok = ok + (thread:get("ok_count") or 0)
    bstatus = bstatus + (thread:get("bad_status") or 0)
    bbody = bbody + (thread:get("bad_body") or 0)
    first = first or thread:get("first_bad")
  end
  local e = summary.errors
  local out = string.format(
    '{"mode":%s,"requests":%d,"duration_us":%d,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"ok":%d,"bad_status":%d,"bad_body":%d,"socket_errors":%d,' ..
    '"timeouts":%d,"first_bad":%s}',
    json_string(mode), summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, ok, bstatus, bbody,
    e.connect + e.read + e.write, e.timeout, json_string(first))
  local path = os.getenv("BENCH_OUT")
  if path and path ~= "" then
    local f = io.open(path, "w")
    f:write(out .. "\n")
    f:close()
  else
    io.write(out .. "\n")
  end
end
