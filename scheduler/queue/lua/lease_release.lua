-- A worker that is shutting down hands jobs back at once instead of letting their leases run
-- out: each lease it still holds expires now, so the scheduler's next sweep puts the job back at
-- its place in the queue and frees what it held; the dispatcher is woken for that sweep.
-- KEYS[1] leases ZSET; KEYS[2] lease owners HASH; KEYS[3] dispatcher wake LIST
-- ARGV[1] worker id; then pairs: job id, dispatch token
-- Returns how many were handed back (a job that is no longer this worker's is left alone).
local leases, owners, wake = KEYS[1], KEYS[2], KEYS[3]
local worker = ARGV[1]
local released = 0
for i = 2, #ARGV, 2 do
  local job_id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', owners, job_id) == token .. '|' .. worker
      and redis.call('ZSCORE', leases, job_id) then
    redis.call('ZADD', leases, 0, job_id)
    released = released + 1
  end
end
if released > 0 then
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
return released
