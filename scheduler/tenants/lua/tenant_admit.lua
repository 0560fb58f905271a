-- Admit jobs for a tenant, or say which limit refuses them; all or nothing, atomically.
-- KEYS[1] open HASH tenant -> jobs accepted and not finished (waiting or running)
-- KEYS[2] this day's spend HASH tenant -> micro-USD; KEYS[3] this month's, the same
-- ARGV[1] tenant; ARGV[2] jobs; ARGV[3] max jobs open (0 = no limit); ARGV[4] estimated cost
-- (micro-USD); ARGV[5] budget (micro-USD, -1 = no budget); ARGV[6] the budget's period, 2 (day)
-- or 3 (month), the key it is counted in; ARGV[7] day key TTL (s); ARGV[8] month key TTL (s)
-- Returns {0, open after, spent after} admitted; {1, open, 0} over max open;
-- {2, open, spent} over budget. A counter below zero (drift, healed by the rebuild) counts as 0.
local tenant, jobs, max_open = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cost, budget, budget_key = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local open = math.max(0, tonumber(redis.call('HGET', KEYS[1], tenant) or '0'))
if max_open > 0 and open + jobs > max_open then return {1, open, 0} end
local spent = math.max(0, tonumber(redis.call('HGET', KEYS[budget_key], tenant) or '0'))
if budget >= 0 and spent + cost > budget then return {2, open, spent} end
redis.call('HINCRBY', KEYS[1], tenant, ARGV[2])
redis.call('HINCRBY', KEYS[2], tenant, ARGV[4])
redis.call('HINCRBY', KEYS[3], tenant, ARGV[4])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
return {0, open + jobs, spent + cost}
