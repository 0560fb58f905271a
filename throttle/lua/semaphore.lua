-- A concurrency semaphore with expiry: a crashed holder's slot frees itself after its ttl.
-- KEYS[1] imgq:v1:limits:concurrency:<model>  sorted set  holder_id -> expiry (epoch ms)
-- ARGV: 1 action (acquire|renew|release)  2 holder_id  3 limit  4 ttl_ms
--       5 now_ms override ("" = redis TIME; only tests set it)
-- acquire: 1 if the holder now holds a slot (re-acquiring renews it), else 0.
-- renew:   1 and a new expiry if the holder still holds its slot, else 0.
-- release: 1 if a slot was released, else 0.

local action, holder, limit, ttl_ms = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now
if ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

if action == 'release' then return redis.call('ZREM', KEYS[1], holder) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], holder)
if action == 'acquire' and not held and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
if action == 'renew' and not held then return 0 end
redis.call('ZADD', KEYS[1], now + ttl_ms, holder)
-- the set lives as long as its longest holder
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(last[2])) - now + 1000)
return 1
