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
--
-- ARGV (policy values travel with every call, so no configuration lives in Redis):
--   1 now_ms override ("" = use redis TIME; only tests set it)   2 model
--   3 failure_rate_threshold  4 window_s  5 minimum_calls  6 open_duration_ms
--   7 slow_call_threshold_ms  8 slow_call_rate_threshold  9 half_open_probes
--   10 quota_default_cooldown_ms  11 probe_timeout_ms  12 events_maxlen
--   13.. per script (see each file)
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
}
local model = ARGV[2]
local now = clock_ms()

local NUMBERS = {'open_until_ms', 'probe_round_until_ms', 'probes_admitted', 'probe_successes',
                 'cooldown_until_ms', 'calls', 'failures', 'slow'}

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
