-- Put dispatched jobs back at their remembered place in the queue (a dispatch that never
-- started: its message was lost, or its worker died before running it, or a worker gave it back
-- because it could not reach the database).
-- KEYS[1..C] class ZSETs; KEYS[C+1] inflight ZSET; KEYS[C+2] dispatched HASH
-- KEYS[C+3] leases ZSET; KEYS[C+4] lease owners HASH
-- ARGV[1] C; ARGV[2..] job ids
local C = tonumber(ARGV[1])
local inflight, dispatched = KEYS[C + 1], KEYS[C + 2]
local leases, owners = KEYS[C + 3], KEYS[C + 4]
local moved = 0
for i = 2, #ARGV do
  local job_id = ARGV[i]
  if redis.call('ZREM', inflight, job_id) == 1 then
    redis.call('ZREM', leases, job_id)
    redis.call('HDEL', owners, job_id)
    local place = redis.call('HGET', dispatched, job_id)
    redis.call('HDEL', dispatched, job_id)
    if place then
      local sep = string.find(place, ':')
      local class, score = tonumber(string.sub(place, 1, sep - 1)), string.sub(place, sep + 1)
      redis.call('ZADD', KEYS[class], 'NX', score, job_id)
      moved = moved + 1
    end
  end
end
return moved
