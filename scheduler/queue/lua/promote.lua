-- Return parked jobs whose not_before has passed to their original place in the queue.
-- KEYS[1..C] class ZSETs; KEYS[C+1] parked ZSET; KEYS[C+2] dispatched HASH
-- ARGV[1] C; ARGV[2] now (ms); ARGV[3] max jobs
local C = tonumber(ARGV[1])
local parked, dispatched = KEYS[C + 1], KEYS[C + 2]
local due = redis.call('ZRANGEBYSCORE', parked, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, job_id in ipairs(due) do
  local place = redis.call('HGET', dispatched, job_id)
  redis.call('ZREM', parked, job_id)
  if place then
    local sep = string.find(place, ':')
    local class, score = tonumber(string.sub(place, 1, sep - 1)), string.sub(place, sep + 1)
    redis.call('ZADD', KEYS[class], 'NX', score, job_id)
  end
end
return #due
