-- The scheduler takes back a job whose lease ran out: out of flight, back to its remembered place.
-- Nothing happens if the lease was renewed meanwhile (the worker is alive after all).
-- KEYS[1..C] class ZSETs; KEYS[C+1] inflight ZSET; KEYS[C+2] dispatched HASH;
-- KEYS[C+3] leases ZSET; KEYS[C+4] lease owners HASH; KEYS[C+5] running HASH
-- ARGV[1] C; ARGV[2] job id; ARGV[3] 'reclaim' or 'extend'; ARGV[4] extension (ms)
-- Returns -1 renewed meanwhile, 1 back at its place, 0 taken back but its place is unknown (the
-- caller pushes it again), 2 extended.
local C, job_id, action = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local inflight, dispatched = KEYS[C + 1], KEYS[C + 2]
local leases, owners, running = KEYS[C + 3], KEYS[C + 4], KEYS[C + 5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = redis.call('ZSCORE', leases, job_id)
if expires and tonumber(expires) >= now then return -1 end
if action == 'extend' then
  redis.call('ZADD', leases, now + tonumber(ARGV[4]), job_id)
  return 2
end
redis.call('ZREM', leases, job_id)
redis.call('HSET', owners, job_id, 'reclaimed')
redis.call('ZREM', inflight, job_id)
redis.call('HDEL', running, job_id)
local place = redis.call('HGET', dispatched, job_id)
redis.call('HDEL', dispatched, job_id)
if not place then return 0 end
local sep = string.find(place, ':')
local class, score = tonumber(string.sub(place, 1, sep - 1)), string.sub(place, sep + 1)
redis.call('ZADD', KEYS[class], 'NX', score, job_id)
return 1
