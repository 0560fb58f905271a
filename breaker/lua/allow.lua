-- allow: may a call to this model start now? One round trip, atomic across all workers.
-- Keys and ARGV 1-14: see common.lua. Then: 15 call_id ("" = not tracked).
-- Returns {allowed 0/1, probe 0/1, reason or "", retry_at_ms or -1}.

local s = load_state()
local function answer(allowed, probe, reason, retry_at_ms)
  return {allowed, probe, reason, retry_at_ms}
end

if s.mode == 'disabled' then return answer(1, 0, 'disabled', -1) end
if s.misconfigured_reason ~= '' then return answer(0, 0, 'misconfigured', -1) end
if s.mode == 'forced_open' then return answer(0, 0, 'forced_open', -1) end
local call_id = ARGV[15]
if policy.gate then drop_expired_calls() end

local before = s.mode
local changed = false
if s.mode == 'open' and now >= s.open_until_ms then
  start_probe_round(s)
  changed = true
elseif s.mode == 'half_open' and now >= s.probe_round_until_ms then
  start_probe_round(s)  -- the last round's probes were lost
  changed = true
end
if changed then
  save_state(s)
  if before ~= s.mode then emit(s, before, s.mode, 'open_duration_elapsed') end
end

if s.cooldown_until_ms > now then
  local retry_at = s.cooldown_until_ms
  if s.mode == 'open' and s.open_until_ms > retry_at then retry_at = s.open_until_ms end
  return answer(0, 0, 'quota_cooldown', retry_at)
end
if s.mode == 'open' then return answer(0, 0, 'open', s.open_until_ms) end
if s.mode == 'half_open' then
  if s.probes_admitted >= policy.half_open_probes then
    return answer(0, 0, 'half_open_budget_spent', s.probe_round_until_ms)
  end
  redis.call('HINCRBY', KEYS[1], 'probes_admitted', 1)
  admit_call(call_id)
  return answer(1, 1, '', -1)
end
if policy.gate then
  local calls_before = s.calls
  trim(s)
  if hanging(s) then
    s.gate_limit = policy.minimum_calls
    save_state(s)
    return answer(0, 0, 'hanging', -1)
  end
  if s.calls ~= calls_before then save_state(s) end
  local width = gate_limit(s)
  if width and redis.call('ZCARD', KEYS[4]) >= width then
    return answer(0, 0, 'gate_shut', -1)
  end
end
admit_call(call_id)
return answer(1, 0, '', -1)
