-- Reserves one send of a bot's, before it leaves: its chat (one message
-- in flight, the next an interval after the last one's answer), its group
-- (at most group_limit answers in any group_window), and the bot overall
-- (at most limit per window, counted from answers, sends spaced). Every
-- time is the server's (TIME), in microseconds, so the processes' clocks
-- need not agree. Nothing is written unless the send is granted.
--
-- KEYS: 1 the bot's slots (hash: seq, w, due, a<seq> anchors), 2 their
-- order (list of seq), 3 the chat (hash: l lease end, o its owner, n next
-- send), 4 the group (list of answer times).
-- ARGV: 1 is a group (1/0), 2 lease, 3 chat interval, 4 group limit,
-- 5 group window, 6 limit, 7 window, 8 spacing, 9 assume received after.
-- Returns {0, seq, anchor} granted; {1, wait} the chat waits; {2, wait}
-- every chat waits.
local function int(x) return string.format('%d', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local chat = redis.call('HMGET', KEYS[3], 'l', 'n')
if (tonumber(chat[1]) or 0) > now then
  -- In flight elsewhere: its answer is still to come, and the next send
  -- an interval after it.
  return {1, tonumber(ARGV[3])}
end
local next_send = tonumber(chat[2]) or 0
if next_send > now then return {1, next_send - now} end

if ARGV[1] == '1' then
  local group_limit, group_window = tonumber(ARGV[4]), tonumber(ARGV[5])
  local n = redis.call('LLEN', KEYS[4])
  if n >= group_limit then
    local free = tonumber(redis.call('LINDEX', KEYS[4], n - group_limit)) + group_window
    if free > now then return {1, free - now} end
  end
end

local limit, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local spacing, assume = tonumber(ARGV[8]), tonumber(ARGV[9])
local bot = redis.call('HMGET', KEYS[1], 'seq', 'w', 'due')
local seq, mark, due = tonumber(bot[1]) or 0, tonumber(bot[2]) or 0, tonumber(bot[3]) or 0
local at = math.max(now, due - math.floor(spacing / 2))
-- The sends this one pushes out of the window: the next may leave a window
-- after the latest moment Telegram can have had any of them.
local n = redis.call('LLEN', KEYS[2])
local leaving = {}
for i = 0, n - limit do
  local s = redis.call('LINDEX', KEYS[2], i)
  mark = math.max(mark, tonumber(redis.call('HGET', KEYS[1], 'a' .. s)) or 0)
  leaving[#leaving + 1] = s
end
if #leaving > 0 then at = math.max(at, mark + window) end
if at > now then return {2, at - now} end

for _, s in ipairs(leaving) do
  redis.call('LPOP', KEYS[2])
  redis.call('HDEL', KEYS[1], 'a' .. s)
end
seq = seq + 1
local anchor = now + assume
redis.call('RPUSH', KEYS[2], int(seq))
redis.call('HSET', KEYS[1], 'seq', int(seq), 'w', int(mark),
  'due', int(math.max(due, now) + spacing), 'a' .. int(seq), int(anchor))
-- Gone once no send in them can hold the next one back.
local ttl = int(math.ceil((window + assume) / 1000) + 1000)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local lease = tonumber(ARGV[2])
redis.call('HSET', KEYS[3], 'l', int(now + lease), 'o', int(anchor))
redis.call('PEXPIRE', KEYS[3], int(math.ceil(lease / 1000) + 1000))
return {0, seq, anchor}
