-- A worker takes or renews the leases of the jobs it holds; timed by Redis TIME.
-- KEYS[1] leases ZSET; KEYS[2] lease owners HASH; KEYS[3] inflight ZSET
-- ARGV[1] lease (ms); ARGV[2] worker id; then pairs: job id, dispatch token
-- Returns one flag per job: 1 held, 0 not ours (re-dispatched, taken back by the scheduler, or
-- held by another live worker: a duplicate delivery).
-- An owner that is missing (Redis was flushed, or reconcile adopted a running job) is taken over,
-- and the job's in-flight entry restored, so a running job survives the loss of its keys.
local leases, owners, inflight = KEYS[1], KEYS[2], KEYS[3]
local lease_ms, worker = tonumber(ARGV[1]), ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = {}
for i = 3, #ARGV, 2 do
  local job_id, token = ARGV[i], ARGV[i + 1]
  local owner = redis.call('HGET', owners, job_id)
  local ok = false
  if not owner then
    ok = true
  else
    local sep = string.find(owner, '|', 1, true)
    local owner_token = sep and string.sub(owner, 1, sep - 1) or owner
    local owner_worker = sep and string.sub(owner, sep + 1) or ''
    if owner_token == token then
      if owner_worker == '' or owner_worker == worker then
        ok = true
      else
        local expires = redis.call('ZSCORE', leases, job_id)
        ok = (not expires) or tonumber(expires) < now
      end
    end
  end
  if ok then
    redis.call('HSET', owners, job_id, token .. '|' .. worker)
    redis.call('ZADD', leases, now + lease_ms, job_id)
    if not redis.call('ZSCORE', inflight, job_id) then
      redis.call('ZADD', inflight, token, job_id)
    end
    held[#held + 1] = 1
  else
    held[#held + 1] = 0
  end
end
return held
