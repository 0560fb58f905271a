-- Take up to ARGV[2] jobs from the head of the queue (classes in dispatch order) and mark them in
-- flight, remembering each job's class and score so a parked job can return to its place.
-- KEYS[1..C] class ZSETs; KEYS[C+1] inflight ZSET; KEYS[C+2] dispatched HASH; KEYS[C+3] bulk round
-- KEYS[C+4] dispatch counter (how many jobs have left the queue, for reading old snapshots)
-- KEYS[C+5] leases ZSET; KEYS[C+6] lease owners HASH: each job taken is leased to its dispatch
-- ARGV[1] C; ARGV[2] count; ARGV[3] now (ms, the dispatch token); ARGV[4] lease (ms)
local C, want, now = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local inflight, dispatched, round_key = KEYS[C + 1], KEYS[C + 2], KEYS[C + 3]
local leases, owners, lease_ms = KEYS[C + 5], KEYS[C + 6], tonumber(ARGV[4])
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease_ms
local bulk_from = C / 2 + 1
local taken = {}
for class = 1, C do
  if #taken >= want then break end
  local head = redis.call('ZRANGE', KEYS[class], 0, want - #taken - 1, 'WITHSCORES')
  for i = 1, #head, 2 do
    local job_id, score = head[i], tonumber(head[i + 1])
    redis.call('ZREM', KEYS[class], job_id)
    redis.call('ZADD', inflight, now, job_id)
    redis.call('HSET', dispatched, job_id, class .. ':' .. string.format('%.0f', score))
    redis.call('ZADD', leases, expires, job_id)
    redis.call('HSET', owners, job_id, now)
    if class >= bulk_from then
      local round = math.floor(score / 1073741824)
      local current = tonumber(redis.call('GET', round_key) or '0')
      if round > current then redis.call('SET', round_key, round) end
    end
    taken[#taken + 1] = job_id
  end
end
if #taken > 0 then redis.call('INCRBY', KEYS[C + 4], #taken) end
return taken
