-- wrk script of the webhook workloads (bench/webhook_wrk.py): walks pre-signed deliveries, logs each answer.
--
-- wrk -s bench/webhook_wrk.lua URL -- DATA_DIR MODE RATE START_SECONDS THREADS
--   DATA_DIR       deliveries-<thread>.bin (records "<seq> <signature bytes> <body bytes>\n<signature><body>"),
--                  written by webhook_wrk.py before the run; answers go to answers-<thread>.log
--   MODE           "closed": each connection sends its next delivery as soon as the last one is answered
--                  "open":   delivery k (global order) is due at START + k / RATE whatever the answers
--   RATE           deliveries per second, all threads together (open loop only)
--   START_SECONDS  CLOCK_MONOTONIC seconds of the schedule's start (the orchestrator's time.monotonic())
--   THREADS        wrk's -t: thread `id` sends deliveries id, id + THREADS, id + 2 * THREADS, ...
--
-- Each answer is logged as "<seq> <status> <end> <begin> <outcome>": begin is the send time (closed loop) or
-- the delivery's intended send time (open loop: wrk2's correction for coordinated omission, so an answer that
-- waited for a free connection counts that wait). The delivery is matched to its answer by X-Request-Id,
-- which the gateway echoes. done() prints how many deliveries each thread sent ("sent <id> <count> <wraps>").

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("bench_timespec")

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

-- Main state: the threads, to read their counts in done().
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

-- Thread state.
local requests, seqs, begins = {}, {}, {}
local count, reserved = 0, 0
sent, wraps = 0, 0 -- globals: done() reads them with thread:get
local open_loop, rate, start, thread_count = false, 0, 0, 1
local answers

function init(args)
  local dir = args[1]
  open_loop = args[2] == "open"
  rate = tonumber(args[3])
  start = tonumber(args[4])
  thread_count = tonumber(args[5])
  local file = assert(io.open(dir .. "/deliveries-" .. id .. ".bin", "rb"))
  while true do
    local header = file:read("*l")
    if not header then break end
    local seq, signature_bytes, body_bytes = header:match("^(%d+) (%d+) (%d+)$")
    local signature = file:read(tonumber(signature_bytes))
    local body = file:read(tonumber(body_bytes))
    count = count + 1
    seqs[count] = tonumber(seq)
    requests[count] = wrk.format("POST", "/webhooks/stripe", {
      ["Content-Type"] = "application/json; charset=utf-8",
      ["Stripe-Signature"] = signature,
      ["X-Request-Id"] = "bench" .. seq,
    }, body)
  end
  file:close()
  assert(count > 0, "no deliveries for thread " .. id)
  answers = assert(io.open(dir .. "/answers-" .. id .. ".log", "w"))
  answers:setvbuf("full", 1024 * 1024)
end

-- The intended send time of this thread's n-th delivery (n from 1): its place in the global order / RATE.
local function due(n)
  return start + ((n - 1) * thread_count + id) / rate
end

function request()
  sent = sent + 1
  local index = (sent - 1) % count + 1
  if index == count then wraps = wraps + 1 end
  local seq = seqs[index]
  begins[seq] = open_loop and due(sent) or now()
  return requests[index]
end

function response(status, headers, body)
  local ended = now()
  local id_header = headers["X-Request-Id"] or headers["x-request-id"] or ""
  local seq = tonumber(id_header:sub(6))
  local outcome = body:match('"outcome": ?"(%a+)"') or "-"
  if seq then
    answers:write(seq, " ", status, " ", string.format("%.6f %.6f", ended, begins[seq] or ended), " ", outcome, "\n")
  else
    answers:write("-1 ", status, " ", string.format("%.6f %.6f", ended, ended), " ", outcome, "\n")
  end
end

if os.getenv("BENCH_WRK_MODE") == "open" then
  -- wrk calls delay() before each request of a connection: wait until the next delivery is due.
  function delay()
    reserved = reserved + 1
    local wait_ms = (due(reserved) - now()) * 1000
    if wait_ms < 0 then return 0 end
    return math.floor(wait_ms)
  end
end

function done(summary, latency, requests_done)
  for _, thread in ipairs(threads) do
    io.write(string.format("sent %d %d %d\n", thread:get("id"), thread:get("sent"), thread:get("wraps")))
  end
end
