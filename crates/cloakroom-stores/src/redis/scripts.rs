//! The Lua scripts: every one touches `KEYS[1]` alone, or (the purge-index scripts)
//! `KEYS[1]` and `KEYS[2]`, which share a hash tag (Redis Cluster's one-slot rule).

use super::*;

// Every script touches KEYS[1] only, but for INDEX and FORGET (a purge bucket and its
// shard's directory, one hash tag). Return values are arrays whose first element is a
// status: 0 = absent (or not live), 1 = conflict / done, 2 = written, -1 = not ours.

/// Sets the key's expiry to the server's time plus `ms` milliseconds. `PEXPIRE` is relative
/// to the server's own clock (Redis propagates it to replicas and the AOF as an absolute
/// `PEXPIREAT`), so no `TIME` call and no arithmetic in Lua are needed.
pub(super) const EXPIRE_FN: &str = r"
local function expire_in(key, ms)
  redis.call('PEXPIRE', key, ms)
end
";

/// Writes the record's fields (ARGV[from..from+7]: d v u l i a e), the layout marker, and
/// the data fields (pairs of name and value from ARGV[from+8] on).
pub(super) const WRITE_FN: &str = r"
local function write_record(key, from)
  redis.call('HSET', key, 'd', ARGV[from], 'v', ARGV[from + 1], 'u', ARGV[from + 2],
    'l', ARGV[from + 3], 'i', ARGV[from + 4], 'a', ARGV[from + 5], 'e', ARGV[from + 6], 'f', '2')
  for j = from + 8, #ARGV, 2 do
    redis.call('HSET', key, ARGV[j], ARGV[j + 1])
  end
end
";

/// ARGV: d v u l i a e ttl_ms, then data field pairs. Returns {2} when created, {1} when the
/// id is taken.
pub(super) const CREATE_BODY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {1} end
write_record(KEYS[1], 1)
expire_in(KEYS[1], ARGV[8])
return {2}
";

/// ARGV: expected_v now d new_v u l i a e ttl_ms, then data field pairs. Returns
/// {2, old_u}, {1} on a version mismatch, {0} when absent or not live, {-1} when the key is
/// not ours. The whole hash is replaced (`DEL`, then written), so data fields of keys the
/// record no longer has go with it.
///
/// No `TYPE` first (every call a script makes costs about a microsecond of server time):
/// `HMGET` on a key that is not a hash fails (caught with `pcall`: not ours), and only when
/// all three fields are missing does `EXISTS` tell an absent key from a foreign hash.
pub(super) const UPDATE_BODY: &str = r"
local f = redis.pcall('HMGET', KEYS[1], 'v', 'e', 'u')
if f.err then return {-1} end
if not f[1] and not f[2] and not f[3] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
  return {-1}
end
if not f[1] or not f[2] or not f[3] or not tonumber(f[2]) then return {-1} end
if tonumber(f[2]) <= tonumber(ARGV[2]) then return {0} end
if f[1] ~= ARGV[1] then return {1} end
redis.call('DEL', KEYS[1])
write_record(KEYS[1], 3)
expire_in(KEYS[1], ARGV[10])
return {2, f[3]}
";

/// ARGV: now idle n_sets, then n_sets pairs of data field and value to set, then data fields
/// to remove. Returns {2, new_v, new_idle}, {0} when absent or not live, {-1} when the key
/// is not ours, {-2} when the record has the older layout (data inside `d`).
pub(super) const APPLY_BODY: &str = r"
local f = redis.pcall('HMGET', KEYS[1], 'v', 'e', 'u', 'l', 'i', 'a', 'f')
if f.err then return {-1} end
if not f[1] and not f[2] and not f[3] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
  return {-1}
end
local v, e, l, i, a = tonumber(f[1]), tonumber(f[2]), tonumber(f[4]), tonumber(f[5]), tonumber(f[6])
if not f[3] or not v or not e or not l or not i or not a then return {-1} end
local now = tonumber(ARGV[1])
if e <= now or a <= now then return {0} end
if f[7] ~= '2' then return {-2} end
local n = tonumber(ARGV[3])
for j = 4, 3 + 2 * n, 2 do
  redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1])
end
for j = 4 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[j])
end
local idle = tonumber(ARGV[2])
if idle > a then idle = a end
if idle < i then idle = i end
if l < now then l = now end
local e2 = idle
if e2 > a then e2 = a end
v = v + 1
redis.call('HSET', KEYS[1], 'v', string.format('%d', v), 'l', string.format('%d', l),
  'i', string.format('%d', idle), 'e', string.format('%d', e2))
expire_in(KEYS[1], (e2 - now) * 1000)
-- A read after the writes: a client tracking keys (the session cache's connection, which
-- sends this script with NOLOOP) keeps tracking this key after writing it.
redis.call('HGET', KEYS[1], 'v')
return {2, v, idle}
";

/// ARGV: now idle. Returns {2, u, new_idle}, {0}, {-1}.
pub(super) const TOUCH_BODY: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
if t ~= 'hash' then return {-1} end
local f = redis.call('HMGET', KEYS[1], 'e', 'a', 'u')
if not f[1] or not f[2] or not f[3] or not tonumber(f[1]) or not tonumber(f[2]) then
  return {-1}
end
local now = tonumber(ARGV[1])
if tonumber(f[1]) <= now then return {0} end
local idle = ARGV[2]
if tonumber(idle) > tonumber(f[2]) then idle = f[2] end
redis.call('HSET', KEYS[1], 'l', ARGV[1], 'i', idle, 'e', idle)
expire_in(KEYS[1], (tonumber(idle) - now) * 1000)
return {2, f[3], idle}
";

/// Returns {1, u, e} when a key was deleted (u and e are '' when it was not a hash), {0}
/// otherwise.
pub(super) const DELETE_BODY: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
local f = {'', ''}
if t == 'hash' then f = redis.call('HMGET', KEYS[1], 'u', 'e') end
redis.call('DEL', KEYS[1])
return {1, f[1] or '', f[2] or ''}
";

/// ARGV: tagged user. Deletes the record if it still belongs to that user: {1, e} or {0}.
pub(super) const REVOKE_BODY: &str = r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return {0} end
local f = redis.call('HMGET', KEYS[1], 'u', 'e')
if f[1] ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1])
return {1, f[2] or ''}
";

/// ARGV: now. {1, u} deleted (not live), {2, e, a} live (file it again), {0} absent.
pub(super) const PURGE_BODY: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
if t ~= 'hash' then redis.call('DEL', KEYS[1]) return {1, ''} end
local f = redis.call('HMGET', KEYS[1], 'e', 'u', 'a')
if f[1] and tonumber(f[1]) and tonumber(f[1]) > tonumber(ARGV[1]) then
  return {2, f[1], f[3] or f[1]}
end
redis.call('DEL', KEYS[1])
return {1, f[2] or ''}
";

/// KEYS: a purge bucket, its shard's directory (one hash tag). ARGV: score, id hash, bucket,
/// ttl_ms. Files the id hash in the bucket (`ZADD LT`: a score only moves down), names the
/// bucket in the directory, and makes both keys live at least `ttl_ms` more (never less
/// than they already would: `PEXPIRE` only when the key would go more than a minute early).
pub(super) const INDEX_BODY: &str = r"
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], 'LT', ARGV[1], ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left + 60000 < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[3])
left = redis.call('PTTL', KEYS[2])
if left < 0 or left + 60000 < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
";

/// KEYS: a purge bucket, its shard's directory. ARGV: bucket. Drops the bucket from the
/// directory when the bucket's key is gone (emptied by purge, or expired): {1}, else {0}.
/// One script, so an index write in between cannot lose its bucket.
pub(super) const FORGET_BODY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
redis.call('ZREM', KEYS[2], ARGV[1])
return {1}
";

/// No ARGV. Increments a user's epoch: {2, n}, or {-1} when the key holds something that
/// is not a decimal number (told apart here, not by the text of INCR's error).
pub(super) const BUMP_BODY: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'string' then return {-1} end
local v = redis.call('GET', KEYS[1])
if v and not string.match(v, '^%d+$') then return {-1} end
if v and string.len(v) > 18 then return {-1} end
return {2, redis.call('INCR', KEYS[1])}
";

/// A Lua script sent by hash; its source is sent again when the server has forgotten it.
pub(super) struct Script {
    pub(super) source: String,
    pub(super) sha: String,
}

impl Script {
    pub(super) fn new(body: &str) -> Self {
        let source = format!("{EXPIRE_FN}{WRITE_FN}{body}");
        let sha = redis::Script::new(&source).get_hash().to_owned();
        Self { source, sha }
    }

    /// `EVALSHA <sha> 1 key args...`.
    pub(super) fn call(&self, key: &str, args: &[&[u8]]) -> Cmd {
        self.call_on(&[key], args)
    }

    /// `EVALSHA <sha> <n> keys... args...`: the keys must share a hash tag.
    pub(super) fn call_on(&self, keys: &[&str], args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len());
        for k in keys {
            cmd.arg(*k);
        }
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// [`Script::call`] followed by the data fields of a record (name, value, ...).
    pub(super) fn call_with_data(
        &self,
        key: &str,
        args: &[&[u8]],
        data: &[(Vec<u8>, Vec<u8>)],
    ) -> Cmd {
        let mut cmd = self.call(key, args);
        for (name, value) in data {
            cmd.arg(name.as_slice()).arg(value.as_slice());
        }
        cmd
    }
}

pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) update: Script,
    pub(super) apply: Script,
    pub(super) touch: Script,
    pub(super) delete: Script,
    pub(super) revoke: Script,
    pub(super) purge: Script,
    pub(super) bump: Script,
    pub(super) index: Script,
    pub(super) forget: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            create: Script::new(CREATE_BODY),
            update: Script::new(UPDATE_BODY),
            apply: Script::new(APPLY_BODY),
            touch: Script::new(TOUCH_BODY),
            delete: Script::new(DELETE_BODY),
            revoke: Script::new(REVOKE_BODY),
            purge: Script::new(PURGE_BODY),
            bump: Script::new(BUMP_BODY),
            index: Script::new(INDEX_BODY),
            forget: Script::new(FORGET_BODY),
        }
    }

    pub(super) fn all(&self) -> [&Script; 10] {
        [
            &self.create,
            &self.update,
            &self.apply,
            &self.touch,
            &self.delete,
            &self.revoke,
            &self.purge,
            &self.bump,
            &self.index,
            &self.forget,
        ]
    }
}
