-- Leases that have run out (Redis TIME), oldest first: job id, owner ('' if none), dispatch time.
-- KEYS[1] leases ZSET; KEYS[2] lease owners HASH; KEYS[3] inflight ZSET
-- ARGV[1] at most this many
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local found = {}
for _, job_id in ipairs(lapsed) do
  found[#found + 1] = job_id
  found[#found + 1] = redis.call('HGET', KEYS[2], job_id) or ''
  found[#found + 1] = redis.call('ZSCORE', KEYS[3], job_id) or ''
end
return found
