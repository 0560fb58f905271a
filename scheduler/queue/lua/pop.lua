-- Take up to ARGV[2] jobs from the head of the queue (classes in dispatch order) and mark them in
-- flight, remembering each job's class and score so a parked job can return to its place.
-- KEYS[1..C] class ZSETs; KEYS[C+1] inflight ZSET; KEYS[C+2] dispatched HASH; KEYS[C+3] bulk round
-- KEYS[C+4] dispatch counter (how many jobs have left the queue, for reading old snapshots)
-- KEYS[C+5] leases ZSET; KEYS[C+6] lease owners HASH: each job taken is leased to its dispatch
-- KEYS[C+7] job -> tenant HASH; KEYS[C+8] tenant -> max jobs in flight HASH ('*': the default)
-- ARGV[1] C; ARGV[2] count; ARGV[3] now (ms, the dispatch token); ARGV[4] lease (ms)
-- ARGV[5] how many waiting jobs to look through at most while passing over capped tenants
--
-- Tenants' caps: a tenant's jobs in flight are counted from the inflight set itself (each job's
-- tenant from the HASH), so whatever takes a job out of flight counts it out. A job whose tenant
-- is at its cap is passed over and keeps its place; the next job, another tenant's, goes first.
-- A job of unknown tenant is never held back. Without any cap the pop is a plain head read.
local C, want, now = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local inflight, dispatched, round_key = KEYS[C + 1], KEYS[C + 2], KEYS[C + 3]
local leases, owners, lease_ms = KEYS[C + 5], KEYS[C + 6], tonumber(ARGV[4])
local job_tenants, caps_key = KEYS[C + 7], KEYS[C + 8]
local scan_limit = tonumber(ARGV[5] or '5000')
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease_ms
local bulk_from = C / 2 + 1
local taken = {}

local function take(class, job_id, score)
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

-- Is any cap in force?
local default_cap = tonumber(redis.call('HGET', caps_key, '*') or '0')
local capped = default_cap > 0
if not capped then
  for _, v in ipairs(redis.call('HVALS', caps_key)) do
    if tonumber(v) > 0 then capped = true break end
  end
end

-- Each tenant's jobs in flight, and its cap.
local flying, caps = {}, {}
local function cap_of(tenant)
  if caps[tenant] == nil then
    local own = redis.call('HGET', caps_key, tenant)
    caps[tenant] = own and tonumber(own) or default_cap
  end
  return caps[tenant]
end
local function tenants_of(ids)
  local found = {}
  for i = 1, #ids, 1000 do
    local part = redis.call('HMGET', job_tenants, unpack(ids, i, math.min(i + 999, #ids)))
    for j = 1, #part do found[#found + 1] = part[j] end
  end
  return found
end
if capped then
  local ids = redis.call('ZRANGE', inflight, 0, -1)
  for i, tenant in ipairs(tenants_of(ids)) do
    if tenant then flying[tenant] = (flying[tenant] or 0) + 1 end
  end
end

local scanned = 0
for class = 1, C do
  if #taken >= want then break end
  if not capped then
    local head = redis.call('ZRANGE', KEYS[class], 0, want - #taken - 1, 'WITHSCORES')
    for i = 1, #head, 2 do take(class, head[i], tonumber(head[i + 1])) end
  else
    local offset = 0  -- the jobs passed over so far stay at the head of this class
    while #taken < want and scanned < scan_limit do
      local size = math.min(scan_limit - scanned, math.max(64, 4 * (want - #taken)))
      local head = redis.call('ZRANGE', KEYS[class], offset, offset + size - 1, 'WITHSCORES')
      if #head == 0 then break end
      local ids = {}
      for i = 1, #head, 2 do ids[#ids + 1] = head[i] end
      local tenants = tenants_of(ids)
      for k = 1, #ids do
        if #taken >= want then break end
        scanned = scanned + 1
        local tenant = tenants[k]
        local cap = tenant and cap_of(tenant) or 0
        if cap > 0 and (flying[tenant] or 0) >= cap then
          offset = offset + 1
        else
          take(class, ids[k], tonumber(head[2 * k]))
          if tenant then flying[tenant] = (flying[tenant] or 0) + 1 end
        end
      end
    end
  end
end
if #taken > 0 then redis.call('INCRBY', KEYS[C + 4], #taken) end
return taken
