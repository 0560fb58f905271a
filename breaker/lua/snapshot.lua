-- snapshot: read one model's state and window with the Redis clock, writing nothing.
-- KEYS[1] state hash, KEYS[2] window hash, KEYS[3] in-flight zset (see common.lua's KEYS[4]);
-- ARGV[1] now_ms override or "".
-- Returns {now_ms, HGETALL state, HGETALL window, ZRANGE in-flight WITHSCORES}.

local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
return {now, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')}
