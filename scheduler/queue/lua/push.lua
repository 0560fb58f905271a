-- Add jobs at the tail of their class, in the order given.
-- KEYS[1..C]  the class ZSETs, in dispatch order (interactive by priority, then bulk by priority)
-- KEYS[C+1]   imgq:v1:seq            arrival counter
-- KEYS[C+2]   imgq:v1:bulk:tenants   HASH tenant -> last bulk round given to it
-- KEYS[C+3]   imgq:v1:bulk:round     the round of the last bulk job dispatched
-- KEYS[C+4]   imgq:v1:job:tenants    HASH job -> tenant (the pop counts tenants' jobs in flight)
-- ARGV[1]     C (number of class keys); then triples: job_id, class index (1-based), tenant
-- Interactive score: arrival order. Bulk score: round * 2^30 + arrival mod 2^30, where a tenant's
-- next round is max(its last round + 1, the round being dispatched): tenants take turns, and one
-- that was idle does not bank credit (start-time fair queuing).
local C = tonumber(ARGV[1])
local seq_key, tenants_key, round_key = KEYS[C + 1], KEYS[C + 2], KEYS[C + 3]
local job_tenants = KEYS[C + 4]
local bulk_from = C / 2 + 1
local current = tonumber(redis.call('GET', round_key) or '0')
local added = 0
for i = 2, #ARGV, 3 do
  local job_id, class, tenant = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local seq = redis.call('INCR', seq_key)
  local score
  if class >= bulk_from then
    local last = redis.call('HGET', tenants_key, tenant)
    local round = current
    if last then round = math.max(tonumber(last) + 1, current) end
    redis.call('HSET', tenants_key, tenant, round)
    score = round * 1073741824 + (seq % 1073741824)
  else
    score = seq
  end
  added = added + redis.call('ZADD', KEYS[class], 'NX', string.format('%.0f', score), job_id)
  if tenant ~= '' then redis.call('HSET', job_tenants, job_id, tenant) end
end
return added
