-- Order entry through the gateway, for wrk (docs/performance.md has the full procedure).
-- Traders on two sides (BUY_TOKENS buy, SELL_TOKENS sell, so orders can cross without
-- self-trade prevention) place GTC limit orders within 20 ticks of 30000.00, each with its own
-- Idempotency-Key. Non-2xx answers are counted and printed at the end. SYMBOLS (comma-separated,
-- default BTC-USD): each order goes to one of them at random — one book each.

-- Comma-separated access tokens: each order goes out as one of the buyers or the sellers.
local function split(list)
  local tokens = {}
  for token in string.gmatch(list or "", "[^,]+") do table.insert(tokens, token) end
  return tokens
end
local buy_tokens = split(os.getenv("BUY_TOKENS"))
local sell_tokens = split(os.getenv("SELL_TOKENS"))
local symbols = split(os.getenv("SYMBOLS") or "BTC-USD")
local counter = 0
local threads = {}
-- Each run's keys are its own. The orders themselves repeat from run to run (the seeds below
-- are fixed), so without this a run after another on the same database — the measured run
-- after the warm-up — re-sent the earlier run's keys with the same bodies, and PostgreSQL
-- answered those as replays: cheap, and counted as orders (docs/performance.md, "Replays
-- counted as orders").
local run = os.getenv("WRK_RUN") or tostring(os.time())
-- `thread_id` is a global set per thread by setup(); a local here would shadow it and make
-- every thread draw the same idempotency keys.

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(thread_id * 7919 + 17)
  non_2xx = 0
end

function request()
  counter = counter + 1
  local buy = math.random() < 0.5
  local ticks = math.random(0, 20)
  local price = buy and (3000000 - ticks) or (3000000 + ticks - 10)
  local body = string.format(
    '{"symbol":"%s","side":"%s","type":"limit","price":"%d.%02d","quantity":"0.0%d","time_in_force":"gtc"}',
    symbols[math.random(#symbols)], buy and "buy" or "sell", math.floor(price / 100), price % 100, math.random(1, 9))
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. (buy and buy_tokens[math.random(#buy_tokens)] or sell_tokens[math.random(#sell_tokens)]),
    ["Idempotency-Key"] = string.format("wrk-%s-%d-%d", run, thread_id, counter),
  }
  return wrk.format("POST", "/v1/orders", headers, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
    if non_2xx <= 3 then
      io.write(string.format("answer %d: %s\n", status, body))
    end
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("non_2xx")
  end
  io.write(string.format("non-2xx answers: %d of %d\n", failed, summary.requests))
  for _, p in ipairs({ 50, 90, 99 }) do
    io.write(string.format("p%d latency: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
