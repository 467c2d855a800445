"""Lua scripts that make multi-key Redis KV operations atomic."""

from __future__ import annotations


def _replace(
    hash_key: str,
    index: str,
    member: str,
    value: str,
    expiration: str,
    metadata: str | None,
    ttl: str,
    indent: str = "",
) -> str:
    """Lua that replaces one entry: a fresh hash holding the value, the expiration and the metadata (each
    Lua expression given; '' means none), Redis's own TTL, and the key in the index."""
    lines = [
        f"redis.call('DEL', {hash_key})",
        f"redis.call('HSET', {hash_key}, 'v', {value})",
        f"if {expiration} ~= '' then redis.call('HSET', {hash_key}, 'e', {expiration}) end",
    ]
    if metadata is not None:
        lines.append(f"if {metadata} ~= '' then redis.call('HSET', {hash_key}, 'm', {metadata}) end")
    lines += [
        f"if {ttl} ~= '' then redis.call('PEXPIRE', {hash_key}, {ttl}) end",
        f"redis.call('ZADD', {index}, 0, {member})",
    ]
    return "".join(f"{indent}{line}\n" for line in lines)


# KEYS[1] value hash, KEYS[2] index sorted set.
# ARGV[1] index member (the raw key), ARGV[2] value, ARGV[3] expiration ('' = none),
# ARGV[4] metadata JSON ('' = none; JSON is never empty), ARGV[5] native TTL in ms ('' = none),
# ARGV[6] '1' to write only when no live entry exists, ARGV[7] the caller's clock.
# Returns 1 when written, 0 when a live entry blocked an only-if-absent write.
PUT = f"""
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  local expiration = redis.call('HGET', KEYS[1], 'e')
  if not expiration or tonumber(expiration) > tonumber(ARGV[7]) then
    return 0
  end
end
{_replace("KEYS[1]", "KEYS[2]", "ARGV[1]", "ARGV[2]", "ARGV[3]", "ARGV[4]", "ARGV[5]")}return 1
"""

# KEYS[1] index sorted set, KEYS[2..n+1] value hashes. ARGV: five per key, in KEYS order: index member (the
# raw key), value, expiration ('' = none), metadata JSON ('' = none), native TTL in ms ('' = none).
# PUT's unconditional write for every key, in order, in one call (a later write of the same key wins).
# Returns the number of keys written.
PUT_MANY = (
    """
for i = 2, #KEYS do
  local a = (i - 2) * 5
"""
    + _replace(
        "KEYS[i]", "KEYS[1]", "ARGV[a + 1]", "ARGV[a + 2]", "ARGV[a + 3]", "ARGV[a + 4]", "ARGV[a + 5]", "  "
    )
    + """end
return #KEYS - 1
"""
)

# KEYS[1] index sorted set, KEYS[2..n] value hashes; ARGV[1] the caller's clock,
# ARGV[2..n] the index members matching KEYS[2..n].
# Drops index members whose hash is gone (native expiry) or expired by the caller's clock.
# Re-checking here, inside one atomic script, keeps a concurrent re-put from being dropped.
CLEANUP = """
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i])
    removed = removed + 1
  else
    local expiration = redis.call('HGET', KEYS[i], 'e')
    if expiration and tonumber(expiration) <= tonumber(ARGV[1]) then
      redis.call('DEL', KEYS[i])
      redis.call('ZREM', KEYS[1], ARGV[i])
      removed = removed + 1
    end
  end
end
return removed
"""


def _incr_loop(first_key: int, first_arg: int) -> str:
    """Lua that counts KEYS[first_key..] (value hashes; KEYS[1] is the index) and returns their new values;
    their arguments are four per key from ARGV[first_arg] on, ARGV[1] is the caller's clock."""
    return (
        f"""
local now = tonumber(ARGV[1])
local out = {{}}
for i = {first_key}, #KEYS do
  local a = {first_arg} + (i - {first_key}) * 4
"""
        + """  local live = redis.call('EXISTS', KEYS[i]) == 1
  if live then
    local expiration = redis.call('HGET', KEYS[i], 'e')
    if expiration and tonumber(expiration) <= now then
      live = false
    end
  end
  if live then
    local value = redis.call('HGET', KEYS[i], 'v')
    local n = tonumber(value)
    if not n or string.format('%d', n) ~= value then
      out[#out + 1] = 'NaN'
    else
      n = n + tonumber(ARGV[a + 1])
      redis.call('HSET', KEYS[i], 'v', string.format('%d', n))
      out[#out + 1] = n
    end
  else
"""
        + _replace("KEYS[i]", "KEYS[1]", "ARGV[a]", "ARGV[a + 1]", "ARGV[a + 2]", None, "ARGV[a + 3]", "    ")
        + """    out[#out + 1] = tonumber(ARGV[a + 1])
  end
end
return out
"""
    )


# KEYS[1] index sorted set, KEYS[2..n+1] value hashes. ARGV[1] the caller's clock, then four per key:
# index member (the raw key), delta, expiration for a new entry ('' = none), native TTL in ms for a new
# entry ('' = none). Returns the new values in key order; a live value that is not an integer is left
# unchanged and reported as the string 'NaN' (the other keys are still counted: each key is atomic alone).
INCR_MANY = _incr_loop(2, 2)

# INCR_MANY at most once per token. KEYS[1] index sorted set, KEYS[2] the token's record (a plain string
# holding its expiration by the caller's clock; Redis's own expiry only reclaims it), KEYS[3..n+2] value
# hashes. ARGV[1] the caller's clock, ARGV[2] the record's expiration, ARGV[3] its native TTL in ms, then
# INCR_MANY's four per key. A live record: nothing is written and the reply is nil. Otherwise the record is
# written and the keys are counted in the same script (atomic: a script runs whole), INCR_MANY's reply.
INCR_MANY_ONCE = """
local recorded = redis.call('GET', KEYS[2])
if recorded and tonumber(recorded) > tonumber(ARGV[1]) then
  return false
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
""" + _incr_loop(3, 4)

# One slice of the sweep that drops index members whose entry is gone: Redis's own expiry removes a value hash
# but not its member of the index, and a key nobody lists again would keep it for good. KEYS[1] index sorted
# set, KEYS[2] the sweep's cursor (shared by every instance: the last member looked at; '' while resting
# after a pass). ARGV[1] the value hashes' name prefix, ARGV[2] the caller's clock, ARGV[3] the slice size,
# ARGV[4] how long to rest after a pass, in ms. The hashes are named here from their members rather than
# passed as KEYS, since which members a slice holds is only known inside the script (standalone Redis allows
# it; this layout, an index beside its hashes, is not for Redis Cluster anyway). Atomic, as CLEANUP: an entry
# written again meanwhile is never dropped. Returns 1 while the pass has more members to see, else 0.
SWEEP = """
local after = redis.call('GET', KEYS[2])
if after == '' then
  return 0
end
local low = '-'
if after then
  low = '(' .. after
end
local size = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYLEX', KEYS[1], low, '+', 'LIMIT', 0, size)
local now = tonumber(ARGV[2])
for _, member in ipairs(members) do
  local hash = ARGV[1] .. member
  local expiration = redis.call('HGET', hash, 'e')
  if expiration then
    if tonumber(expiration) <= now then
      redis.call('DEL', hash)
      redis.call('ZREM', KEYS[1], member)
    end
  elseif redis.call('EXISTS', hash) == 0 then
    redis.call('ZREM', KEYS[1], member)
  end
end
if #members < size then
  redis.call('SET', KEYS[2], '', 'PX', ARGV[4])
  return 0
end
-- A day's TTL: a namespace nobody uses any more keeps no cursor (a pass it cuts short starts again).
redis.call('SET', KEYS[2], members[#members], 'EX', 86400)
return 1
"""
