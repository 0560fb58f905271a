-- Shared prelude of allow.lua, record.lua and override.lua (prepended by breaker/redis_store.py).
-- The rules are those of breaker/machine.py; the property test holds the two equal.
--
-- Keys (named in breaker/keys.py; <p> = "imgq:v1:breaker", <m> = the model):
--   KEYS[1] <p>:state:<m>   hash  mode, open_until_ms, probe_round_until_ms, probes_admitted,
--                                 probe_successes, cooldown_until_ms, misconfigured_reason,
--                                 override_reason, calls, failures, slow (running window totals)
--                                 Expires after 7 idle days unless an override or a
--                                 misconfiguration is set (those are sticky).
--   KEYS[2] <p>:window:<m>  hash  c:<second>, f:<second>, s:<second> -> calls, failures, slow
--                                 of that second; expires window_s + 1 s after the last call.
--   KEYS[3] <p>:events      stream  one entry per transition: model, from, to, reason, calls,
--                                 failures, slow, at_ms (MAXLEN ~ ARGV[12])
--   KEYS[4] <p>:inflight:<m> zset  call_id -> start ms of the calls admitted and not yet
--                                 recorded (gate on only); expires probe_timeout_ms after the
--                                 last admission.
--
-- ARGV (policy values travel with every call, so no configuration lives in Redis):
--   1 now_ms override ("" = use redis TIME; only tests set it)   2 model
--   3 failure_rate_threshold  4 window_s  5 minimum_calls  6 open_duration_ms
--   7 slow_call_threshold_ms  8 slow_call_rate_threshold  9 half_open_probes
--   10 quota_default_cooldown_ms  11 probe_timeout_ms  12 events_maxlen
--   13 gate 0/1  14 gate_full_calls
--   15.. per script (see each file)
-- All times are epoch milliseconds; 0 = unset.

local IDLE_EXPIRE_MS = 7 * 24 * 3600 * 1000

local function clock_ms()
  if ARGV[1] ~= "" then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local policy = {
  failure_rate_threshold = tonumber(ARGV[3]), window_s = tonumber(ARGV[4]),
  minimum_calls = tonumber(ARGV[5]), open_duration_ms = tonumber(ARGV[6]),
  slow_call_threshold_ms = tonumber(ARGV[7]), slow_call_rate_threshold = tonumber(ARGV[8]),
  half_open_probes = tonumber(ARGV[9]), quota_default_cooldown_ms = tonumber(ARGV[10]),
  probe_timeout_ms = tonumber(ARGV[11]), events_maxlen = tonumber(ARGV[12]),
  gate = ARGV[13] == '1', gate_full_calls = tonumber(ARGV[14]),
}
local model = ARGV[2]
local now = clock_ms()

local NUMBERS = {'open_until_ms', 'probe_round_until_ms', 'probes_admitted', 'probe_successes',
                 'cooldown_until_ms', 'calls', 'failures', 'slow', 'gate_limit',
                 'last_success_ms'}

local function load_state()
  local flat = redis.call('HGETALL', KEYS[1])
  local s = {mode = 'closed', misconfigured_reason = '', override_reason = ''}
  for _, name in ipairs(NUMBERS) do s[name] = 0 end
  for i = 1, #flat, 2 do s[flat[i]] = flat[i + 1] end
  for _, name in ipairs(NUMBERS) do s[name] = tonumber(s[name]) end
  return s
end

local function save_state(s)
  local flat = {'mode', s.mode, 'misconfigured_reason', s.misconfigured_reason,
                'override_reason', s.override_reason}
  for _, name in ipairs(NUMBERS) do
    flat[#flat + 1] = name
    flat[#flat + 1] = string.format('%d', s[name])
  end
  redis.call('HSET', KEYS[1], unpack(flat))
  if s.misconfigured_reason ~= '' or s.mode == 'forced_open' or s.mode == 'disabled' then
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('PEXPIRE', KEYS[1], IDLE_EXPIRE_MS)
  end
end

local function emit(s, from, to, reason)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', policy.events_maxlen, '*',
             'model', model, 'from', from, 'to', to, 'reason', reason,
             'calls', s.calls, 'failures', s.failures, 'slow', s.slow, 'at_ms', now)
end

local function start_probe_round(s)
  s.mode = 'half_open'
  s.probes_admitted = 0
  s.probe_successes = 0
  s.probe_round_until_ms = now + policy.probe_timeout_ms
end

-- The sliding window (breaker/window.py): drop the seconds that have left it from the totals.
local function trim(s)
  if redis.call('EXISTS', KEYS[2]) == 0 then  -- expired with its buckets: nothing in the window
    s.calls, s.failures, s.slow = 0, 0, 0
    return
  end
  local oldest = math.floor(now / 1000) - policy.window_s + 1
  local totals = {c = 'calls', f = 'failures', s = 'slow'}
  for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
    if tonumber(string.sub(field, 3)) < oldest then
      local total = totals[string.sub(field, 1, 1)]
      s[total] = s[total] - tonumber(redis.call('HGET', KEYS[2], field))
      redis.call('HDEL', KEYS[2], field)
    end
  end
end

-- The slow-start gate and hang detection (breaker/gate.py).
local function drop_expired_calls()
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf',
             '(' .. string.format('%d', now - policy.probe_timeout_ms))
end

local function hanging(s)
  local since = '(' .. string.format('%d', now - policy.slow_call_threshold_ms)
  local newest = redis.call('ZREVRANGEBYSCORE', KEYS[4], since, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #newest == 0 then return false end
  return s.last_success_ms < tonumber(newest[2]) + policy.slow_call_threshold_ms
end

local function gate_limit(s)  -- nil: the gate does not limit; s is trimmed to now
  if s.calls < policy.minimum_calls then return policy.minimum_calls - s.failures end
  local width = policy.minimum_calls
  if s.gate_limit > width then width = s.gate_limit end
  if width >= policy.gate_full_calls then return nil end
  return width
end

local function admit_call(call_id)
  if not policy.gate or call_id == '' then return end
  redis.call('ZADD', KEYS[4], string.format('%d', now), call_id)
  redis.call('PEXPIRE', KEYS[4], policy.probe_timeout_ms)
end

local function gate_after_outcome(s, succeeded)
  local width = s.gate_limit
  if width < policy.minimum_calls then width = policy.minimum_calls end
  if succeeded then
    width = width + 1
  elseif width - 1 > policy.minimum_calls then
    width = width - 1
  else
    width = policy.minimum_calls
  end
  if s.calls <= policy.minimum_calls and width > policy.minimum_calls + s.calls then
    width = policy.minimum_calls + s.calls
  end
  if width > policy.gate_full_calls then width = policy.gate_full_calls end
  s.gate_limit = width
end
