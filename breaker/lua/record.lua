-- record: apply one call's outcome. One round trip, atomic across all workers.
-- Keys and ARGV 1-14: see common.lua. Then:
--   15 outcome (success|failure|quota|misconfigured|ignored)  16 latency_ms  17 was_probe 0/1
--   18 retry_after_ms ("" = policy default)  19 reason (for misconfigured)
--   20 call_id ("" = none): no longer in flight, whatever the outcome
-- Returns the state after the call (mode).

local outcome, latency_ms, was_probe = ARGV[15], tonumber(ARGV[16]), ARGV[17] == '1'
if ARGV[20] ~= '' then redis.call('ZREM', KEYS[4], ARGV[20]) end
local s = load_state()
local mode = s.mode
if mode == 'disabled' or outcome == 'ignored' and not (was_probe and mode == 'half_open') then
  return mode
end

local function return_probe_slot()
  if was_probe and s.mode == 'half_open' and s.probes_admitted > 0 then
    s.probes_admitted = s.probes_admitted - 1
  end
end

local function add_call(failed, slow)
  local second = string.format('%d', math.floor(now / 1000))
  redis.call('HINCRBY', KEYS[2], 'c:' .. second, 1)
  s.calls = s.calls + 1
  if failed then
    redis.call('HINCRBY', KEYS[2], 'f:' .. second, 1)
    s.failures = s.failures + 1
  end
  if slow then
    redis.call('HINCRBY', KEYS[2], 's:' .. second, 1)
    s.slow = s.slow + 1
  end
  redis.call('PEXPIRE', KEYS[2], (policy.window_s + 1) * 1000)
end

local function trip_reason()
  if s.calls < policy.minimum_calls then return nil end
  if s.failures / s.calls >= policy.failure_rate_threshold then return 'failure_rate' end
  if policy.slow_call_rate_threshold < 1.0
      and s.slow / s.calls >= policy.slow_call_rate_threshold then
    return 'slow_call_rate'
  end
  return nil
end

local function open(from, why)
  s.mode = 'open'
  s.open_until_ms = now + policy.open_duration_ms
  s.probes_admitted, s.probe_successes, s.probe_round_until_ms = 0, 0, 0
  save_state(s)
  emit(s, from, 'open', why)
end

if outcome == 'ignored' then
  return_probe_slot()
  save_state(s)
  return s.mode
end
if outcome == 'quota' then
  local cooldown_ms = policy.quota_default_cooldown_ms
  if ARGV[18] ~= '' then cooldown_ms = tonumber(ARGV[18]) end
  if now + cooldown_ms > s.cooldown_until_ms then s.cooldown_until_ms = now + cooldown_ms end
  return_probe_slot()
  save_state(s)
  emit(s, mode, mode, 'quota_cooldown')
  return s.mode
end
if outcome == 'misconfigured' then
  s.misconfigured_reason = ARGV[19] ~= '' and ARGV[19] or 'misconfigured'
  save_state(s)
  emit(s, mode, mode, 'misconfigured')
  return s.mode
end

local failed = outcome == 'failure'
if mode == 'closed' then
  trim(s)
  add_call(failed, latency_ms > policy.slow_call_threshold_ms)
  if not failed then s.last_success_ms = now end
  if policy.gate then gate_after_outcome(s, not failed) end
  local why = trip_reason()
  if why then open('closed', why) else save_state(s) end
elseif mode == 'half_open' and was_probe then
  if failed then
    open('half_open', 'probe_failed')
  else
    s.probe_successes = s.probe_successes + 1
    s.last_success_ms = now
    if s.probe_successes >= policy.half_open_probes then
      redis.call('DEL', KEYS[2])
      s.mode = 'closed'
      s.calls, s.failures, s.slow, s.gate_limit = 0, 0, 0, 0
      s.probes_admitted, s.probe_successes, s.open_until_ms, s.probe_round_until_ms = 0, 0, 0, 0
      save_state(s)
      emit(s, 'half_open', 'closed', 'probes_succeeded')
    else
      save_state(s)
    end
  end
end
return s.mode
