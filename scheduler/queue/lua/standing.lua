-- Where a job stands, in one call: {position or -1, 1 if in flight else 0, jobs dispatched so far}.
-- KEYS[1..n-2] the class ZSETs in dispatch order, KEYS[n-1] imgq:v1:inflight,
-- KEYS[n] imgq:v1:dispatch:count. ARGV[1] the job id. O(classes x log n), as position.lua.
local classes = #KEYS - 2
local count = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
local ahead = 0
for i = 1, classes do
  local rank = redis.call('ZRANK', KEYS[i], ARGV[1])
  if rank then return {ahead + rank, 0, count} end
  ahead = ahead + redis.call('ZCARD', KEYS[i])
end
local inflight = redis.call('ZSCORE', KEYS[classes + 1], ARGV[1]) and 1 or 0
return {-1, inflight, count}
