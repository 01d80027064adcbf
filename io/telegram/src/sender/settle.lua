-- Settles a send reserve.lua granted, once its answer is in: its anchor in
-- the bot's window becomes the answer's time if that is sooner; the chat's
-- lease ends and its next send waits `hold` from now; a message a group
-- was sent counts against the group's limit from now. Times are the
-- server's, in microseconds; every moment here is after the answer, so
-- every limit counts from no earlier than Telegram had the message.
--
-- KEYS: as reserve.lua's.
-- ARGV: 1 seq, 2 anchor (both as reserve.lua returned them), 3 hold,
-- 4 sent to a group (1/0), 5 group limit, 6 group window.
local function int(x) return string.format('%d', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- The slot may be gone (the window moved on, or the keys expired) or be
-- another's of the same seq after they did: the anchor tells.
local slot = 'a' .. ARGV[1]
if redis.call('HGET', KEYS[1], slot) == ARGV[2] and now < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], slot, int(now))
end

local chat = redis.call('HMGET', KEYS[3], 'o', 'n', 'l')
local next_send = math.max(tonumber(chat[2]) or 0, now + tonumber(ARGV[3]))
local keep = next_send
if chat[1] == ARGV[2] then
  redis.call('HDEL', KEYS[3], 'l', 'o')
else
  -- The lease lapsed and another process holds the chat now.
  keep = math.max(keep, tonumber(chat[3]) or 0)
end
redis.call('HSET', KEYS[3], 'n', int(next_send))
redis.call('PEXPIRE', KEYS[3], int(math.ceil((keep - now) / 1000) + 1000))

if ARGV[4] == '1' then
  redis.call('RPUSH', KEYS[4], int(now))
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
  redis.call('PEXPIRE', KEYS[4], int(math.ceil(tonumber(ARGV[6]) / 1000)))
end
return 1
