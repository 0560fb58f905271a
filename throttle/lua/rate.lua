-- A requests-per-minute limit as a sliding-window log: at most `limit` calls in any 60 s, the
-- way vendors count RPM. A burst up to the limit goes at once; then calls wait for the oldest
-- one to leave the window. (A GCRA with burst 1 would space every call 60/rpm s apart, which
-- sends healthy traffic to fallbacks for no reason.)
-- KEYS[1] imgq:v1:limits:rate:<model>      sorted set  call id -> call time (epoch ms)
-- KEYS[2] imgq:v1:limits:rate:<model>:seq  string      counter giving each call a unique id
-- ARGV: 1 limit (calls per window)  2 window_ms  3 now_ms override ("" = redis TIME; tests only)
-- Returns 0 when the call may go now (and is counted), else the ms to wait.

local limit, window_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window_ms)
if redis.call('ZCARD', KEYS[1]) < limit then
  local id = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], window_ms + 1000)
  redis.call('PEXPIRE', KEYS[2], window_ms + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window_ms - now)
