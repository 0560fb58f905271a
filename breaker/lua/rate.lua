-- A requests-per-minute limit as GCRA (generic cell rate algorithm): calls are spaced
-- 60000 / rpm ms apart, with up to `burst` calls at once.
-- KEYS[1] imgq:v1:limits:rate:<model>  string  theoretical arrival time (epoch ms)
-- ARGV: 1 interval_ms (60000 / rpm)  2 burst  3 now_ms override ("" = redis TIME; tests only)
-- Returns 0 when the call may go now (and takes its place), else the ms to wait.

local interval_ms, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tolerance_ms = (burst - 1) * interval_ms
local wait_ms = tat - tolerance_ms - now
if wait_ms > 0 then return wait_ms end
local next_tat = tat + interval_ms
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', next_tat - now + 1000)
return 0
