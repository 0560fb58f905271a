-- override: an operator's command. Keys and ARGV 1-14: see common.lua. Then:
--   15 action (force_open|disable|reset)  16 reason (for force_open)
-- Returns the state after the command.

local action, reason = ARGV[15], ARGV[16]
local s = load_state()
local before = s.mode
if action == 'force_open' then
  s.mode = 'forced_open'
  s.override_reason = reason
  save_state(s)
  emit(s, before, s.mode, 'forced_open: ' .. reason)
elseif action == 'disable' then
  s.mode = 'disabled'
  s.override_reason = 'disabled'
  save_state(s)
  emit(s, before, s.mode, 'disabled')
elseif action == 'reset' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
  s = load_state()
  emit(s, before, 'closed', 'reset')
else
  return redis.error_reply('unknown override ' .. tostring(action))
end
return s.mode
