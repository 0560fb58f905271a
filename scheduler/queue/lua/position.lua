-- Number of jobs that will be dispatched before ARGV[1]; -1 when it is not waiting.
-- KEYS[1..n] the class ZSETs in dispatch order. O(classes x log n).
local ahead = 0
for i = 1, #KEYS do
  local rank = redis.call('ZRANK', KEYS[i], ARGV[1])
  if rank then return ahead + rank end
  ahead = ahead + redis.call('ZCARD', KEYS[i])
end
return -1
