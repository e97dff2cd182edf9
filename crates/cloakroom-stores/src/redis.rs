//! The Redis store (feature `redis`): records as hashes that expire on the server, CAS as one
//! server-side Lua script, per-user indexes as sorted sets.
//!
//! # Keys
//!
//! With the default prefix `cloakroom:`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `cloakroom:{r:<id hash hex>}` | hash | `d` the record without its data ([`Record::encode`]), `k:<key>` each data key's MessagePack value, `v` the version, `u` the user, `l`/`i`/`a` last seen, idle and absolute deadline, `e` the earlier deadline, `f` = `2` (the layout) |
//! | `cloakroom:{u:<user>}:sessions` | sorted set | the user's id hashes, scored by (at least) their expiry: the absolute deadline |
//! | `cloakroom:{u:<user>}:epoch` | string | the user's epoch |
//! | `cloakroom:expiry` | sorted set | every id hash, scored by (at most) its expiry, for [`Store::purge_expired`] |
//!
//! The parts in braces are Redis Cluster hash tags: a record's key is alone in its slot and
//! both keys of one user share a slot. Every script touches `KEYS[1]` alone and every
//! multi-key command (the `MULTI` of [`Store::sessions_of`]) names one key, so nothing here
//! ever needs two slots at once, as Redis Cluster requires (a unit test checks the scripts).
//!
//! # Guarantees
//!
//! - A record's key expires on the server at its earlier deadline (`PEXPIRE`), translated
//!   into the server's clock: the store reads no clock of its own, so the deadline is taken
//!   relative to the `now` the caller passed and counted from the server's own time. Liveness is still decided
//!   against the caller's `now` on every read.
//! - [`Store::update`] is one Lua script (loaded once with `SCRIPT LOAD`, called with
//!   `EVALSHA`, loaded again when the server answers `NOSCRIPT`, e.g. after a restart) that
//!   compares the version and writes, so it is atomic.
//! - [`Store::apply`] (a request's commit) is one script on the record's key alone, one round
//!   trip: each changed data key is its own hash field, so the script sets (`HSET`) and
//!   removes (`HDEL`) the request's fields, bumps `v`, slides `l`/`i`/`e` (never back) and
//!   the key's TTL, and refuses a key that is gone or not live. Redis runs scripts one at a
//!   time, so overlapping commits of a session are serialised by the server: none fails,
//!   none is retried. The user does not change, and a user index is scored by the absolute
//!   deadline (which never moves), so no index is written. A record stored by an older
//!   version of this store (its data inside `d`, no `f`) is converted by its first commit,
//!   which goes through [`cloakroom::apply_by_compare_and_swap`] once.
//! - The index writes that go with a record write are sent before it (in the same round
//!   trip where they can be), so an index is always a superset of the records it points at;
//!   entries that point at nothing are pruned as they are read.
//! - Durability is Redis's: with `appendonly yes` and `appendfsync everysec` at most a second
//!   of writes can be lost in a crash; without persistence a restart logs everyone out.
//!
//! # Connections
//!
//! One server: one multiplexed connection ([`redis::aio::ConnectionManager`]) shared by
//! every clone of the store, reconnecting by itself after the server went away.
//!
//! Redis Cluster (`redis+cluster://HOST:PORT,HOST:PORT,...`, `rediss+cluster://...` for TLS,
//! or [`RedisStoreBuilder::cluster`]): the `redis` crate's async cluster client, which
//! follows `MOVED`/`ASK` and learns the new primaries after a failover. The nodes named are
//! only where it starts; the rest are found from the cluster. A pipeline of this store whose
//! commands live in several slots (an index write and the record write of a
//! [`Store::create`]) is sent as one pipeline per run of consecutive same-slot commands, in
//! order, so the index-before-record rule still holds. Scripts are loaded on every primary,
//! and again when a primary answers `NOSCRIPT` (a replica promoted by a failover has none).
//!
//! Every round trip is bounded by the connect timeout plus the command timeout (1 s each by
//! default); a store that cannot reach its server (or, in a cluster, the primary of a key's
//! slot) answers [`ErrorKind::Unavailable`].
//!
//! # TLS
//!
//! `rediss://` (and `rediss+cluster://`) connect with TLS (rustls), verifying the server's
//! certificate and name against the system's CAs, or against the PEM file named by
//! `?ca=PATH` or [`RedisStoreBuilder::with_ca_file`]. `redis://` to a host that is not this
//! machine (a loopback address or `localhost`) is refused unless the URL option
//! `allow_plaintext_to_remote_host` or [`RedisStoreBuilder::allow_plaintext_to_remote_host`]
//! is set.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::{Applied, Changes, Error, ErrorKind, IdHash, Record, Store};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, Slot};
use redis::{Arg, Cmd, IntoConnectionInfo, Pipeline, Value};

use crate::transport;

/// The connect and command timeouts unless configured otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The key prefix unless configured otherwise.
const DEFAULT_PREFIX: &str = "cloakroom:";

/// Server-side TTLs are capped at this many seconds (400 days), whatever the deadlines say.
const MAX_TTL_SECS: u64 = 400 * 24 * 3600;

/// How many expired candidates one purge round looks at, at most.
const PURGE_ROUND: usize = 256;

// Every script touches KEYS[1] only. Return values are arrays whose first element is a
// status: 0 = absent (or not live), 1 = conflict / done, 2 = written, -1 = not ours.

/// Sets the key's expiry to the server's time plus `ms` milliseconds. `PEXPIRE` is relative
/// to the server's own clock (Redis propagates it to replicas and the AOF as an absolute
/// `PEXPIREAT`), so no `TIME` call and no arithmetic in Lua are needed.
const EXPIRE_FN: &str = r"
local function expire_in(key, ms)
  redis.call('PEXPIRE', key, ms)
end
";

/// Writes the record's fields (ARGV[from..from+7]: d v u l i a e), the layout marker, and
/// the data fields (pairs of name and value from ARGV[from+8] on).
const WRITE_FN: &str = r"
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
const CREATE_BODY: &str = r"
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
const UPDATE_BODY: &str = r"
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
const APPLY_BODY: &str = r"
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
return {2, v, idle}
";

/// ARGV: now idle. Returns {2, u, new_idle}, {0}, {-1}.
const TOUCH_BODY: &str = r"
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

/// Returns {1, u} when a key was deleted (u is '' when it was not a hash), {0} otherwise.
const DELETE_BODY: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
local u = ''
if t == 'hash' then u = redis.call('HGET', KEYS[1], 'u') or '' end
redis.call('DEL', KEYS[1])
return {1, u}
";

/// ARGV: tagged user. Deletes the record if it still belongs to that user: {1} or {0}.
const REVOKE_BODY: &str = r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return {0} end
if redis.call('HGET', KEYS[1], 'u') ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1])
return {1}
";

/// ARGV: now. {1, u} deleted (not live), {2, e} live (rescore), {0} absent.
const PURGE_BODY: &str = r"
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return {0} end
if t ~= 'hash' then redis.call('DEL', KEYS[1]) return {1, ''} end
local f = redis.call('HMGET', KEYS[1], 'e', 'u')
if f[1] and tonumber(f[1]) and tonumber(f[1]) > tonumber(ARGV[1]) then return {2, f[1]} end
redis.call('DEL', KEYS[1])
return {1, f[2] or ''}
";

/// A Lua script sent by hash; its source is sent again when the server has forgotten it.
struct Script {
    source: String,
    sha: String,
}

impl Script {
    fn new(body: &str) -> Self {
        let source = format!("{EXPIRE_FN}{WRITE_FN}{body}");
        let sha = redis::Script::new(&source).get_hash().to_owned();
        Self { source, sha }
    }

    /// `EVALSHA <sha> 1 key args...`.
    fn call(&self, key: &str, args: &[&[u8]]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(1).arg(key);
        for a in args {
            cmd.arg(*a);
        }
        cmd
    }

    /// [`Script::call`] followed by the data fields of a record (name, value, ...).
    fn call_with_data(&self, key: &str, args: &[&[u8]], data: &[(Vec<u8>, Vec<u8>)]) -> Cmd {
        let mut cmd = self.call(key, args);
        for (name, value) in data {
            cmd.arg(name.as_slice()).arg(value.as_slice());
        }
        cmd
    }
}

struct Scripts {
    create: Script,
    update: Script,
    apply: Script,
    touch: Script,
    delete: Script,
    revoke: Script,
    purge: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create: Script::new(CREATE_BODY),
            update: Script::new(UPDATE_BODY),
            apply: Script::new(APPLY_BODY),
            touch: Script::new(TOUCH_BODY),
            delete: Script::new(DELETE_BODY),
            revoke: Script::new(REVOKE_BODY),
            purge: Script::new(PURGE_BODY),
        }
    }

    fn all(&self) -> [&Script; 7] {
        [
            &self.create,
            &self.update,
            &self.apply,
            &self.touch,
            &self.delete,
            &self.revoke,
            &self.purge,
        ]
    }
}

/// How to reach Redis: built by [`RedisStore::builder`], finished by
/// [`RedisStoreBuilder::connect`].
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    cluster: bool,
    replica_acks: Option<u32>,
    ca: Option<PathBuf>,
    allow_plaintext_to_remote_host: bool,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: it is not shown.
        let Self {
            url: _,
            prefix,
            connect_timeout,
            command_timeout,
            cluster,
            replica_acks,
            ca,
            allow_plaintext_to_remote_host,
        } = self;
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", prefix)
            .field("connect_timeout", connect_timeout)
            .field("command_timeout", command_timeout)
            .field("cluster", cluster)
            .field("replica_acks", replica_acks)
            .field("ca", ca)
            .field(
                "allow_plaintext_to_remote_host",
                allow_plaintext_to_remote_host,
            )
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key this store writes (default `cloakroom:`). Two stores
    /// with different prefixes on one server never see each other's sessions. It must not
    /// contain `{` or `}` (they would break the hash tags).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one connection attempt may take (default 1 s).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server may take to answer one round trip (default 1 s).
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Treat the URL as naming nodes of a Redis Cluster (as the scheme `redis+cluster://`
    /// does): `redis://HOST:PORT` or `rediss://HOST:PORT`, several nodes separated by
    /// commas.
    #[must_use]
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// In a cluster: how many replicas must confirm each write (`WAIT`) before it counts as
    /// done (default 1). Redis replicates asynchronously, so a write confirmed by its primary
    /// alone is lost if that primary dies before passing it on and its replica is promoted.
    /// A write not confirmed within a fifth of the command timeout (10 to 200 ms) fails as
    /// `Unavailable`, saying that it may have been applied. 0 turns this off (faster, but a failover may then lose
    /// acknowledged writes); a cluster without replicas needs 0.
    #[must_use]
    pub fn with_replica_acks(mut self, replicas: u32) -> Self {
        self.replica_acks = Some(replicas);
        self
    }

    /// Trust the CA certificates in the PEM file `path` instead of the system's (the URL
    /// option `ca=PATH` does the same). Needs a `rediss://` URL.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(path.into());
        self
    }

    /// Allow `redis://` (no TLS) to a host that is not this machine (the URL option
    /// `allow_plaintext_to_remote_host` does the same). Without it such a URL is refused:
    /// session records would cross the network readable and writable by anyone on the
    /// path.
    #[must_use]
    pub fn allow_plaintext_to_remote_host(mut self) -> Self {
        self.allow_plaintext_to_remote_host = true;
        self
    }

    /// Connects and loads the scripts.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a bad URL, prefix or CA file, and for `redis://` to a
    /// host that is not this machine without `allow_plaintext_to_remote_host`;
    /// [`ErrorKind::Unavailable`] if the server cannot be reached within the connect timeout.
    pub async fn connect(self) -> Result<RedisStore, Error> {
        if self.prefix.contains(['{', '}']) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a Redis key prefix must not contain braces (they are hash tags)",
            ));
        }
        let target = Target::parse(&self.url, self.cluster)?;
        let ca = match self.ca.as_ref().or(target.options.ca.as_ref()) {
            Some(path) if !target.tls => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "a CA file ({}) is named but the Redis URL is not rediss://",
                        path.display()
                    ),
                ))
            }
            Some(path) => Some(transport::read_ca_file(path)?),
            None => None,
        };
        let allow_plaintext =
            self.allow_plaintext_to_remote_host || target.options.allow_plaintext_to_remote_host;
        for node in &target.nodes {
            check_plaintext(node, allow_plaintext)?;
        }
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.clone(),
        };
        let bound = self.connect_timeout + self.command_timeout;
        let conn = if target.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(target.nodes.clone())
                .connection_timeout(self.connect_timeout)
                .response_timeout(self.command_timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100);
            if ca.is_some() {
                builder = builder.certs(certs());
            }
            let client = builder.build().map_err(|e| {
                Error::new(ErrorKind::InvalidInput, "invalid Redis Cluster URL").with_source(e)
            })?;
            match tokio::time::timeout(bound, client.get_async_connection()).await {
                Ok(Ok(conn)) => Conn::Cluster {
                    link: std::sync::Arc::new(ClusterLink {
                        client,
                        conn: std::sync::Mutex::new(conn),
                        renewing: std::sync::atomic::AtomicBool::new(false),
                        connect_timeout: self.connect_timeout,
                    }),
                    replica_acks: self.replica_acks.unwrap_or(1),
                    // `WAIT` blocks the multiplexed connection to that primary for as long
                    // as it waits (a primary without a replica makes it wait it out), so it
                    // gets a fifth of the command timeout, 10 to 200 ms.
                    wait_ms: u64::try_from(self.command_timeout.as_millis() / 5)
                        .unwrap_or(u64::MAX)
                        .clamp(10, 200),
                },
                Ok(Err(e)) => {
                    return Err(Error::unavailable("cannot connect to the Redis Cluster", e))
                }
                Err(e) => {
                    return Err(Error::unavailable(
                        "connecting to the Redis Cluster timed out",
                        e,
                    ))
                }
            }
        } else {
            let url = target.nodes[0].as_str();
            let client = if ca.is_some() {
                redis::Client::build_with_tls(url, certs())
            } else {
                redis::Client::open(url)
            }
            .map_err(|e| Error::new(ErrorKind::InvalidInput, "invalid Redis URL").with_source(e))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(Some(self.command_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(self.connect_timeout);
            match tokio::time::timeout(bound, ConnectionManager::new_with_config(client, config))
                .await
            {
                Ok(Ok(conn)) => Conn::Single(conn),
                Ok(Err(e)) => return Err(Error::unavailable("cannot connect to Redis", e)),
                Err(e) => return Err(Error::unavailable("connecting to Redis timed out", e)),
            }
        };
        let store = RedisStore {
            conn,
            prefix: self.prefix,
            bound,
            scripts: std::sync::Arc::new(Scripts::new()),
        };
        store.load_scripts().await?;
        Ok(store)
    }
}

/// Sessions in Redis. Cheap to clone: clones share one multiplexed connection.
///
/// ```no_run
/// # async fn example() -> Result<(), cloakroom::Error> {
/// use std::time::Duration;
/// use cloakroom_stores::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .with_prefix("myapp:sessions:")
///     .with_command_timeout(Duration::from_millis(500))
///     .connect()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    bound: Duration,
    scripts: std::sync::Arc<Scripts>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            conn,
            prefix,
            bound,
            scripts: _,
        } = self;
        f.debug_struct("RedisStore")
            .field("cluster", &matches!(conn, Conn::Cluster { .. }))
            .field("prefix", prefix)
            .field("round_trip_bound", bound)
            .finish_non_exhaustive()
    }
}

/// A record as the scripts take it: the fields of the hash.
struct Fields {
    /// The record without its data.
    d: Vec<u8>,
    /// The data: (`k:<key>`, MessagePack value) pairs.
    data: Vec<(Vec<u8>, Vec<u8>)>,
    v: String,
    u: Vec<u8>,
    l: String,
    i: String,
    a: String,
    e: String,
    ttl_ms: String,
}

fn tagged_user(user: Option<&str>) -> Vec<u8> {
    match user {
        Some(u) => {
            let mut out = Vec::with_capacity(u.len() + 1);
            out.push(b'+');
            out.extend_from_slice(u.as_bytes());
            out
        }
        None => b"-".to_vec(),
    }
}

fn untag_user(tagged: &[u8]) -> Option<String> {
    match tagged.split_first() {
        Some((b'+', rest)) => String::from_utf8(rest.to_vec()).ok(),
        _ => None,
    }
}

fn ttl_ms(deadline: u64, reference: u64) -> u64 {
    deadline
        .saturating_sub(reference)
        .clamp(0, MAX_TTL_SECS)
        .saturating_mul(1000)
        .max(1)
}

/// The hash field of data key `key`.
fn data_field(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATA_FIELD.len() + key.len());
    out.extend_from_slice(DATA_FIELD);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The prefix of data fields.
const DATA_FIELD: &[u8] = b"k:";

fn encode_value(key: &str, value: &cloakroom::Value) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec(value).map_err(|e| {
        Error::new(
            ErrorKind::Value,
            format!("the value of session key {key:?} does not encode"),
        )
        .with_source(e)
    })
}

fn fields(record: &Record, version: u64, reference: u64) -> Result<Fields, Error> {
    let mut stored = record.clone();
    stored.version = version;
    let data = std::mem::take(&mut stored.data)
        .iter()
        .map(|(k, v)| Ok((data_field(k), encode_value(k, v)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Fields {
        d: stored.encode()?,
        data,
        v: version.to_string(),
        u: tagged_user(record.user_id.as_deref()),
        l: record.last_seen.to_string(),
        i: record.idle_deadline.to_string(),
        a: record.absolute_deadline.to_string(),
        e: record.expires_at().to_string(),
        ttl_ms: ttl_ms(record.expires_at(), reference).to_string(),
    })
}

fn map_err(what: &'static str, e: redis::RedisError) -> Error {
    let not_ours = e.code() == Some("WRONGTYPE")
        || e.to_string().contains("WRONGTYPE")
        || e.to_string().contains("not an integer");
    if not_ours {
        Error::corrupt(what, e)
    } else {
        Error::unavailable(what, e)
    }
}

fn not_ours(key: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("the Redis key {key} holds something this store did not write"),
    )
}

fn unexpected(what: &str) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("unexpected reply from Redis to {what}"),
    )
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// `[status, ...]` from a script.
fn status(v: &Value) -> Option<(i64, &[Value])> {
    match v {
        Value::Array(items) => {
            let (first, rest) = items.split_first()?;
            Some((int(first)?, rest))
        }
        _ => None,
    }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The connection: to one server, or to a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster {
        link: std::sync::Arc<ClusterLink>,
        /// After each part that writes: `WAIT replica_acks wait_ms` (0: no `WAIT`).
        replica_acks: u32,
        wait_ms: u64,
    },
}

/// A cluster connection that is made anew (in the background, at most one at a time) when
/// round trips fail: the cluster client learns a failover's new primary from `MOVED`
/// replies and its own slot refreshes, and a fresh connection asks the named nodes again,
/// so the store recovers even when the old connection keeps waiting on a dead node.
struct ClusterLink {
    client: redis::cluster::ClusterClient,
    conn: std::sync::Mutex<ClusterConnection>,
    renewing: std::sync::atomic::AtomicBool,
    connect_timeout: Duration,
}

impl ClusterLink {
    fn current(&self) -> ClusterConnection {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts making a new connection, unless one is being made.
    fn renew(self: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let made =
                tokio::time::timeout(link.connect_timeout * 2, link.client.get_async_connection())
                    .await;
            if let Ok(Ok(conn)) = made {
                *link
                    .conn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
            }
            // At most five new connections a second.
            tokio::time::sleep(Duration::from_millis(200)).await;
            link.renewing.store(false, Ordering::Release);
        });
    }
}

/// Why a round trip failed.
enum QueryError {
    Redis(redis::RedisError),
    /// A write was applied on a primary, but fewer replicas than required confirmed it in
    /// time: it may be lost if that primary fails now.
    NotReplicated {
        acked: i64,
        wanted: u32,
    },
}

impl From<redis::RedisError> for QueryError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(e)
    }
}

/// Whether a command of this store only reads.
fn reads_only(cmd: &Cmd) -> bool {
    let Some(Arg::Simple(name)) = cmd.args_iter().next() else {
        return false;
    };
    [
        b"HGETALL".as_slice(),
        b"HGET",
        b"GET",
        b"ZRANGE",
        b"ZRANGEBYSCORE",
    ]
    .iter()
    .any(|r| name.eq_ignore_ascii_case(r))
}

/// Sends one part (commands in one slot) to a cluster, with `WAIT` after it when it writes.
async fn send_part(
    conn: &mut ClusterConnection,
    mut part: Pipeline,
    replica_acks: u32,
    wait_ms: u64,
) -> Result<Vec<Value>, QueryError> {
    let writes = part.cmd_iter().any(|c| !reads_only(c));
    if replica_acks == 0 || !writes || part.is_transaction() {
        return Ok(part.query_async(conn).await?);
    }
    // `WAIT` names no key: it goes with the part's commands, to the same primary.
    part.cmd("WAIT").arg(replica_acks).arg(wait_ms);
    let mut replies: Vec<Value> = part.query_async(conn).await?;
    let acked = match replies.pop() {
        Some(Value::Int(n)) => n,
        _ => -1,
    };
    if acked < i64::from(replica_acks) {
        return Err(QueryError::NotReplicated {
            acked,
            wanted: replica_acks,
        });
    }
    Ok(replies)
}

/// The slot of a command's key (`EVALSHA sha numkeys key`, or `CMD key ...`), `None` for a
/// command without a key.
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let mut args = cmd.args_iter().map(|a| match a {
        Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()??;
    let key = if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        args.nth(2)??
    } else {
        args.next()??
    };
    Some(Slot::for_key(key))
}

impl Conn {
    /// Sends `pipe` and returns the replies of its commands, in order. In a cluster, a
    /// pipeline whose commands live in several slots goes as one pipeline per run of
    /// consecutive same-slot commands, one after the other (in order); a transaction must
    /// be in one slot. (No pipeline sent here marks a command `ignore`d, so the replies of
    /// the parts line up with the commands.)
    async fn query(&self, pipe: &Pipeline) -> Result<Vec<Value>, QueryError> {
        match self {
            Self::Single(conn) => Ok(pipe.query_async(&mut conn.clone()).await?),
            Self::Cluster {
                link,
                replica_acks,
                wait_ms,
            } => {
                let (acks, wait_ms) = (*replica_acks, *wait_ms);
                let mut conn = link.current();
                let slots: Vec<Option<Slot>> = pipe.cmd_iter().map(slot_of).collect();
                let mut distinct = slots.iter().flatten();
                let first = distinct.next();
                if pipe.is_transaction() || distinct.all(|s| Some(s) == first) {
                    return send_part(&mut conn, pipe.clone(), acks, wait_ms).await;
                }
                let mut out = Vec::with_capacity(slots.len());
                let mut part = redis::pipe();
                let mut part_slot = None;
                for (cmd, slot) in pipe.cmd_iter().zip(&slots) {
                    if part_slot.is_some() && slot.is_some() && *slot != part_slot {
                        let done = std::mem::replace(&mut part, redis::pipe());
                        out.extend(send_part(&mut conn, done, acks, wait_ms).await?);
                    }
                    if slot.is_some() {
                        part_slot = *slot;
                    }
                    part.add_command(cmd.clone());
                }
                if !part.is_empty() {
                    out.extend(send_part(&mut conn, part, acks, wait_ms).await?);
                }
                Ok(out)
            }
        }
    }
}

/// A Redis URL taken apart: the nodes (each a URL the `redis` crate reads), TLS or not,
/// cluster or not, and the store's own options.
struct Target {
    nodes: Vec<String>,
    tls: bool,
    cluster: bool,
    options: transport::UrlOptions,
}

impl Target {
    fn parse(url: &str, cluster: bool) -> Result<Self, Error> {
        let invalid = |m: &str| Error::new(ErrorKind::InvalidInput, m.to_owned());
        let (url, options) = transport::take_options(url)?;
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid(
                "a Redis URL starts with redis://, rediss:// or redis+cluster://",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let (base, cluster) = match scheme.strip_suffix("+cluster") {
            Some(base) => (base.to_owned(), true),
            None => (scheme.clone(), cluster),
        };
        let tls = base == "rediss";
        if !cluster {
            return Ok(Self {
                nodes: vec![format!("{scheme}://{rest}")],
                tls,
                cluster,
                options,
            });
        }
        if base != "redis" && base != "rediss" {
            return Err(invalid(
                "a Redis Cluster URL is redis+cluster://HOST:PORT,... or rediss+cluster://...",
            ));
        }
        // HOST:PORT,HOST:PORT[/0][?query]; user and password, if any, before the first node.
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (tail, String::new()),
        };
        if !matches!(path, "" | "/" | "/0") {
            return Err(invalid(
                "Redis Cluster has database 0 only: a cluster URL has no /DB",
            ));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{base}://{userinfo}{h}{query}"))
            .collect();
        if nodes.is_empty() {
            return Err(invalid("a Redis Cluster URL names no node"));
        }
        Ok(Self {
            nodes,
            tls,
            cluster,
            options,
        })
    }
}

/// Refuses a plaintext node that is not this machine, unless allowed.
fn check_plaintext(node: &str, allow: bool) -> Result<(), Error> {
    let info = node
        .into_connection_info()
        .map_err(|e| Error::new(ErrorKind::InvalidInput, "invalid Redis URL").with_source(e))?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, _) if !allow && !transport::is_loopback(host) => Err(
            transport::plaintext_refused("Redis", host, "use a rediss:// URL"),
        ),
        _ => Ok(()),
    }
}

impl RedisStore {
    /// A builder for a store on the server at `url` (`redis://host:port/db`,
    /// `redis://:password@host:port`, `rediss://host:port` for TLS), or on the Redis Cluster
    /// at `redis+cluster://host:port,host:port` (`rediss+cluster://` for TLS). The query
    /// options `ca=PATH` and `allow_plaintext_to_remote_host` are the store's own (see the
    /// module docs); the rest of the URL is read by the `redis` crate.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_TIMEOUT,
            command_timeout: DEFAULT_TIMEOUT,
            cluster: false,
            replica_acks: None,
            ca: None,
            allow_plaintext_to_remote_host: false,
        }
    }

    /// A store on `url` with the default prefix and timeouts.
    ///
    /// # Errors
    /// As [`RedisStoreBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(url).connect().await
    }

    /// The prefix of every key this store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key the record of `id` is kept under (for operators and tests).
    pub fn record_key(&self, id: &IdHash) -> String {
        format!("{}{{r:{}}}", self.prefix, id.to_hex())
    }

    fn user_key(&self, user: &str, what: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + user.len() + 16);
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(b"{u:");
        k.extend_from_slice(user.as_bytes());
        k.extend_from_slice(b"}:");
        k.extend_from_slice(what.as_bytes());
        k
    }

    fn index_key(&self, user: &str) -> Vec<u8> {
        self.user_key(user, "sessions")
    }

    fn epoch_key(&self, user: &str) -> Vec<u8> {
        self.user_key(user, "epoch")
    }

    fn expiry_key(&self) -> String {
        format!("{}expiry", self.prefix)
    }

    async fn load_scripts(&self) -> Result<(), Error> {
        match &self.conn {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for s in self.scripts.all() {
                    pipe.cmd("SCRIPT").arg("LOAD").arg(&s.source);
                }
                let _: Vec<Value> = self.bounded("SCRIPT LOAD", pipe).await?;
            }
            Conn::Cluster { link, .. } => {
                // Every primary: a script is called on the node of its key's slot.
                let mut conn = link.current();
                let load = async {
                    for s in self.scripts.all() {
                        let mut cmd = redis::cmd("SCRIPT");
                        cmd.arg("LOAD").arg(&s.source);
                        let routing = RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::AllSucceeded),
                        ));
                        conn.route_command(cmd, routing)
                            .await
                            .map_err(|e| map_err("SCRIPT LOAD", e))?;
                    }
                    Ok::<(), Error>(())
                };
                tokio::time::timeout(self.bound * 2, load)
                    .await
                    .map_err(|e| {
                        Error::unavailable("Redis did not answer SCRIPT LOAD in time", e)
                    })??;
            }
        }
        Ok(())
    }

    /// One round trip, bounded in time, with NOSCRIPT answered by loading the scripts and
    /// sending the pipeline again (every pipeline here is safe to repeat).
    async fn bounded(&self, what: &'static str, pipe: Pipeline) -> Result<Vec<Value>, Error> {
        for attempt in 0..2 {
            let result = tokio::time::timeout(self.bound, self.conn.query(&pipe)).await;
            if let Conn::Cluster { link, .. } = &self.conn {
                if matches!(result, Err(_) | Ok(Err(QueryError::Redis(_)))) {
                    link.renew();
                }
            }
            let result = result.map_err(|e| {
                Error::unavailable(format!("Redis did not answer {what} in time"), e)
            })?;
            match result {
                Ok(values) => return Ok(values),
                Err(QueryError::Redis(e))
                    if attempt == 0
                        && e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    // The server restarted, its script cache was flushed, or (in a cluster)
                    // a replica without them was promoted.
                    tracing::debug!("Redis lost the scripts; loading them again");
                    Box::pin(self.load_scripts()).await?;
                }
                Err(QueryError::Redis(e)) => return Err(map_err(what, e)),
                Err(QueryError::NotReplicated { acked, wanted }) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "{what}: the write may have been applied on the Redis primary, but \
                             {} of {wanted} replicas confirmed it in time, so a failover \
                             could lose it (see RedisStoreBuilder::with_replica_acks)",
                            acked.max(0)
                        ),
                    ))
                }
            }
        }
        Err(unexpected(what))
    }

    async fn one(&self, what: &'static str, cmd: Cmd) -> Result<Value, Error> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd);
        self.bounded(what, pipe)
            .await?
            .pop()
            .ok_or_else(|| unexpected(what))
    }

    /// Decodes the `HGETALL` reply of a record key.
    fn decode(&self, id: &IdHash, reply: &Value, now: u64) -> Result<Option<Record>, Error> {
        let pairs: Vec<(&Value, &Value)> = match reply {
            Value::Array(items) if items.len() % 2 == 0 => {
                items.chunks_exact(2).map(|c| (&c[0], &c[1])).collect()
            }
            Value::Map(entries) => entries.iter().map(|(k, v)| (k, v)).collect(),
            _ => return Err(unexpected("HGETALL")),
        };
        if pairs.is_empty() {
            return Ok(None);
        }
        // The key is formatted only for an error: a load that succeeds allocates no key name.
        let not_ours = || not_ours(&self.record_key(id));
        let (mut d, mut l, mut i, mut v, mut layout) = (None, None, None, None, None);
        let mut data = Vec::new();
        for (name, value) in pairs {
            let (Some(name), Some(value)) = (bytes(name), bytes(value)) else {
                return Err(unexpected("HGETALL"));
            };
            match name {
                b"d" => d = Some(value),
                b"l" => l = Some(value),
                b"i" => i = Some(value),
                b"v" => v = Some(value),
                b"f" => layout = Some(value),
                _ => {
                    if let Some(key) = name.strip_prefix(DATA_FIELD) {
                        data.push((key, value));
                    }
                }
            }
        }
        let (Some(d), Some(l), Some(i)) = (d, l, i) else {
            return Err(not_ours());
        };
        let mut record = Record::decode(d)?;
        let (Some(l), Some(i)) = (parse_u64(l), parse_u64(i)) else {
            return Err(not_ours());
        };
        if record.id_hash != *id {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the Redis key {} holds another session's record",
                    self.record_key(id)
                ),
            ));
        }
        if layout == Some(b"2".as_slice()) {
            // The data and the version live in fields of their own (`apply` writes them
            // without rewriting `d`).
            record.version = v.and_then(parse_u64).ok_or_else(not_ours)?;
            record.data.clear();
            for (key, value) in data {
                let key = std::str::from_utf8(key).map_err(|e| {
                    Error::corrupt(
                        format!(
                            "a data field of the Redis key {} is not UTF-8",
                            self.record_key(id)
                        ),
                        e,
                    )
                })?;
                record.data.insert(
                    key.to_owned(),
                    decode_value(value).map_err(|e| {
                        Error::corrupt(
                            format!(
                                "the value of {key:?} in the Redis key {} does not decode",
                                self.record_key(id)
                            ),
                            e,
                        )
                    })?,
                );
            }
        } else if layout.is_some() {
            return Err(not_ours());
        }
        // `touch` and `apply` write these two fields alone, without rewriting the record.
        record.last_seen = l;
        record.idle_deadline = i;
        Ok(record.is_live(now).then_some(record))
    }

    fn hgetall(&self, id: &IdHash) -> Cmd {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.record_key(id));
        cmd
    }
}

/// Decodes one data value: exactly one MessagePack value, nothing after it.
fn decode_value(
    bytes: &[u8],
) -> Result<cloakroom::Value, Box<dyn std::error::Error + Send + Sync>> {
    let mut cursor = bytes;
    let value: cloakroom::Value = rmp_serde::decode::from_read(&mut cursor)?;
    if !cursor.is_empty() {
        return Err("trailing bytes after a value".into());
    }
    Ok(value)
}

#[async_trait]
impl Store for RedisStore {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let f = fields(record, record.version, now)?;
        let id = record.id_hash.to_hex();
        let e = record.expires_at();
        let mut pipe = redis::pipe();
        // Index entries first: an index may point at nothing, never miss a record. A user
        // index is scored by the absolute deadline, which no commit or touch moves.
        if let Some(user) = &record.user_id {
            pipe.cmd("ZADD")
                .arg(self.index_key(user))
                .arg("GT")
                .arg(record.absolute_deadline)
                .arg(&id);
        }
        pipe.cmd("ZADD")
            .arg(self.expiry_key())
            .arg("LT")
            .arg(e)
            .arg(&id);
        pipe.add_command(self.scripts.create.call_with_data(
            &self.record_key(&record.id_hash),
            &[
                &f.d,
                f.v.as_bytes(),
                &f.u,
                f.l.as_bytes(),
                f.i.as_bytes(),
                f.a.as_bytes(),
                f.e.as_bytes(),
                f.ttl_ms.as_bytes(),
            ],
            &f.data,
        ));
        let replies = self.bounded("create", pipe).await?;
        match replies.last().and_then(status) {
            Some((2, _)) => Ok(()),
            Some((1, _)) => Err(Error::conflict()),
            _ => Err(unexpected("create")),
        }
    }

    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        let reply = self.one("load", self.hgetall(id)).await?;
        self.decode(id, &reply, now)
    }

    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        let next = record.version.saturating_add(1);
        let f = fields(record, next, now)?;
        let id = record.id_hash.to_hex();
        let e = record.expires_at();
        let key = self.record_key(&record.id_hash);
        let expected = record.version.to_string();
        let now_s = now.to_string();
        let mut pipe = redis::pipe();
        if let Some(user) = &record.user_id {
            pipe.cmd("ZADD")
                .arg(self.index_key(user))
                .arg("GT")
                .arg(record.absolute_deadline.max(e))
                .arg(&id);
        }
        pipe.cmd("ZADD")
            .arg(self.expiry_key())
            .arg("LT")
            .arg(e)
            .arg(&id);
        pipe.add_command(self.scripts.update.call_with_data(
            &key,
            &[
                expected.as_bytes(),
                now_s.as_bytes(),
                &f.d,
                f.v.as_bytes(),
                &f.u,
                f.l.as_bytes(),
                f.i.as_bytes(),
                f.a.as_bytes(),
                f.e.as_bytes(),
                f.ttl_ms.as_bytes(),
            ],
            &f.data,
        ));
        let replies = self.bounded("update", pipe).await?;
        match replies.last().and_then(status) {
            Some((2, rest)) => {
                let old = rest.first().and_then(bytes).and_then(untag_user);
                if let Some(old) = old.filter(|o| Some(o) != record.user_id.as_ref()) {
                    // The session moved to another user: the old index lets go of it.
                    let mut cmd = redis::cmd("ZREM");
                    cmd.arg(self.index_key(&old)).arg(&id);
                    self.one("update (index)", cmd).await?;
                }
                Ok(next)
            }
            Some((1, _)) => Err(Error::conflict()),
            Some((0, _)) => Err(Error::not_found()),
            Some((-1, _)) => Err(not_ours(&key)),
            _ => Err(unexpected("update")),
        }
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let key = self.record_key(id);
        let (now_s, idle_s) = (now.to_string(), idle_deadline.to_string());
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        for (k, v) in changes.iter() {
            match v {
                Some(v) => sets.push((data_field(k), encode_value(k, v)?)),
                None => removes.push(data_field(k)),
            }
        }
        let n = sets.len().to_string();
        let mut cmd = self.scripts.apply.call_with_data(
            &key,
            &[now_s.as_bytes(), idle_s.as_bytes(), n.as_bytes()],
            &sets,
        );
        for field in &removes {
            cmd.arg(field.as_slice());
        }
        let reply = self.one("apply", cmd).await?;
        match status(&reply) {
            Some((2, rest)) => {
                let number = |i: usize| {
                    rest.get(i)
                        .and_then(int)
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| unexpected("apply"))
                };
                Ok(Applied::new(number(0)?, number(1)?))
            }
            Some((0, _)) => Err(Error::not_found()),
            Some((-1, _)) => Err(not_ours(&key)),
            // Stored by an older version of this store: one compare-and-swap commit
            // rewrites it in the current layout.
            Some((-2, _)) => {
                cloakroom::apply_by_compare_and_swap(self, id, changes, now, idle_deadline).await
            }
            _ => Err(unexpected("apply")),
        }
    }

    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        let key = self.record_key(id);
        let hex = id.to_hex();
        let (now_s, idle_s) = (now.to_string(), idle_deadline.to_string());
        // The user's index learns the later expiry before the record has it: an index may
        // over-state an expiry (it is checked when read), never under-state it.
        let mut hget = redis::cmd("HGET");
        hget.arg(&key).arg("u");
        let user = bytes(&self.one("touch", hget).await?).and_then(untag_user);
        let mut pipe = redis::pipe();
        if let Some(user) = &user {
            pipe.cmd("ZADD")
                .arg(self.index_key(user))
                .arg("GT")
                .arg(idle_deadline)
                .arg(&hex);
        }
        let script_at = usize::from(user.is_some());
        pipe.add_command(
            self.scripts
                .touch
                .call(&key, &[now_s.as_bytes(), idle_s.as_bytes()]),
        );
        pipe.cmd("ZADD")
            .arg(self.expiry_key())
            .arg("LT")
            .arg(idle_deadline)
            .arg(&hex);
        let replies = self.bounded("touch", pipe).await?;
        match replies.get(script_at).and_then(status) {
            Some((2, rest)) => {
                let now_user = rest.first().and_then(bytes).and_then(untag_user);
                let idle = rest
                    .get(1)
                    .and_then(bytes)
                    .and_then(parse_u64)
                    .ok_or_else(|| unexpected("touch"))?;
                // Rare: the session changed user in between, or the deadline was capped at
                // the absolute one (the purge index wants the lower score).
                let mut pipe = redis::pipe();
                let mut more = false;
                if let Some(u) = now_user.filter(|u| Some(u) != user.as_ref()) {
                    pipe.cmd("ZADD")
                        .arg(self.index_key(&u))
                        .arg("GT")
                        .arg(idle)
                        .arg(&hex);
                    more = true;
                }
                if idle < idle_deadline {
                    pipe.cmd("ZADD")
                        .arg(self.expiry_key())
                        .arg("LT")
                        .arg(idle)
                        .arg(&hex);
                    more = true;
                }
                if more {
                    self.bounded("touch (index)", pipe).await?;
                }
                Ok(())
            }
            Some((0, _)) => Err(Error::not_found()),
            Some((-1, _)) => Err(not_ours(&key)),
            _ => Err(unexpected("touch")),
        }
    }

    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        let reply = self
            .one(
                "delete",
                self.scripts.delete.call(&self.record_key(id), &[]),
            )
            .await?;
        match status(&reply) {
            Some((1, rest)) => {
                let hex = id.to_hex();
                let mut pipe = redis::pipe();
                if let Some(user) = rest.first().and_then(bytes).and_then(untag_user) {
                    pipe.cmd("ZREM").arg(self.index_key(&user)).arg(&hex);
                }
                pipe.cmd("ZREM").arg(self.expiry_key()).arg(&hex);
                self.bounded("delete (index)", pipe).await?;
                Ok(true)
            }
            Some((0, _)) => Ok(false),
            _ => Err(unexpected("delete")),
        }
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let index = self.index_key(user);
        let mut pipe = redis::pipe();
        pipe.atomic();
        // Pruned as read: entries scored at or before `now` belong to dead sessions.
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("ZRANGE").arg(&index).arg(0).arg(-1);
        let replies = self.bounded("sessions_of", pipe).await?;
        let Some(Value::Array(members)) = replies.into_iter().next() else {
            return Err(unexpected("sessions_of"));
        };
        let mut ids = Vec::with_capacity(members.len());
        for m in &members {
            let id = bytes(m)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| IdHash::from_hex(s).ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Corrupt,
                        "a Redis user index holds a non-id member",
                    )
                })?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.add_command(self.hgetall(id));
        }
        let replies = self.bounded("sessions_of (records)", pipe).await?;
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (id, reply) in ids.iter().zip(&replies) {
            match self.decode(id, reply, now)? {
                Some(r) if r.user_id.as_deref() == Some(user) => out.push(r),
                // Dead, gone, or moved to another user. A dead one stays until its score
                // passes (it may be dead only at this `now`, not at a caller's earlier one).
                Some(_) => stale.push(id.to_hex()),
                None if matches!(reply, Value::Array(v) if v.is_empty())
                    || matches!(reply, Value::Map(v) if v.is_empty()) =>
                {
                    stale.push(id.to_hex());
                }
                None => {}
            }
        }
        if !stale.is_empty() {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&index).arg(&stale);
            self.one("sessions_of (prune)", cmd).await?;
        }
        Ok(out)
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        let index = self.index_key(user);
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&index).arg(0).arg(-1);
        let Value::Array(members) = self.one("revoke_user_sessions", cmd).await? else {
            return Err(unexpected("revoke_user_sessions"));
        };
        let keep = except.map(IdHash::to_hex);
        let ids: Vec<String> = members
            .iter()
            .filter_map(|m| bytes(m).and_then(|b| String::from_utf8(b.to_vec()).ok()))
            .filter(|m| Some(m) != keep.as_ref())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let tagged = tagged_user(Some(user));
        let mut pipe = redis::pipe();
        for hex in &ids {
            let key = format!("{}{{r:{hex}}}", self.prefix);
            pipe.add_command(self.scripts.revoke.call(&key, &[&tagged]));
        }
        let replies = self.bounded("revoke_user_sessions", pipe).await?;
        let deleted: Vec<&String> = ids
            .iter()
            .zip(&replies)
            .filter(|(_, r)| matches!(status(r), Some((1, _))))
            .map(|(id, _)| id)
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(&index).arg(&ids);
        if !deleted.is_empty() {
            pipe.cmd("ZREM").arg(self.expiry_key()).arg(&deleted);
        }
        self.bounded("revoke_user_sessions (index)", pipe).await?;
        Ok(deleted.len() as u64)
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.epoch_key(user));
        match self.one("user_epoch", cmd).await? {
            Value::Nil => Ok(0),
            v => bytes(&v).and_then(parse_u64).ok_or_else(|| {
                Error::new(ErrorKind::Corrupt, "a Redis user epoch is not a number")
            }),
        }
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(self.epoch_key(user));
        let v = self.one("bump_user_epoch", cmd).await?;
        int(&v)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| unexpected("INCR"))
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let mut deleted = 0;
        while deleted < limit {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(self.expiry_key())
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg((limit - deleted).min(PURGE_ROUND));
            let Value::Array(members) = self.one("purge_expired", cmd).await? else {
                return Err(unexpected("purge_expired"));
            };
            let ids: Vec<Vec<u8>> = members
                .iter()
                .filter_map(bytes)
                .map(<[u8]>::to_vec)
                .collect();
            if ids.is_empty() {
                break;
            }
            let now_s = now.to_string();
            let mut pipe = redis::pipe();
            for hex in &ids {
                let mut key = self.prefix.as_bytes().to_vec();
                key.extend_from_slice(b"{r:");
                key.extend_from_slice(hex);
                key.push(b'}');
                let key = String::from_utf8_lossy(&key).into_owned();
                pipe.add_command(self.scripts.purge.call(&key, &[now_s.as_bytes()]));
            }
            let replies = self.bounded("purge_expired", pipe).await?;
            let mut follow = redis::pipe();
            for (hex, reply) in ids.iter().zip(&replies) {
                match status(reply) {
                    Some((2, rest)) => {
                        // Live after all (touched since it was indexed): rescore it.
                        let e = rest.first().and_then(bytes).and_then(parse_u64);
                        let e = e.ok_or_else(|| unexpected("purge_expired"))?;
                        follow
                            .cmd("ZADD")
                            .arg(self.expiry_key())
                            .arg("XX")
                            .arg(e)
                            .arg(hex);
                    }
                    Some((1, rest)) => {
                        deleted += 1;
                        follow.cmd("ZREM").arg(self.expiry_key()).arg(hex);
                        if let Some(user) = rest.first().and_then(bytes).and_then(untag_user) {
                            follow.cmd("ZREM").arg(self.index_key(&user)).arg(hex);
                        }
                    }
                    _ => {
                        follow.cmd("ZREM").arg(self.expiry_key()).arg(hex);
                    }
                }
            }
            self.bounded("purge_expired (index)", follow).await?;
        }
        Ok(deleted)
    }
    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.admin_find_by_prefix(prefix, now).await
    }

    async fn stats(&self, now: u64) -> Result<cloakroom::Stats, Error> {
        self.admin_stats(now).await
    }

    fn store_name(&self) -> &'static str {
        "redis"
    }
}

// Operator queries (find by id prefix, stats).
#[path = "admin/redis.rs"]
mod admin;
#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster runs a script only if every key it touches is in one slot, and only if
    /// the script names its keys in `KEYS`: every script here must touch `KEYS[1]` alone
    /// (and build no key names of its own).
    #[test]
    fn every_script_touches_its_one_key() {
        for script in Scripts::new().all() {
            let src = &script.source;
            let mut rest = src.as_str();
            while let Some(i) = rest.find("KEYS[") {
                rest = &rest[i + 5..];
                assert!(rest.starts_with("1]"), "a script uses another key: {src}");
            }
            assert!(!src.contains("#KEYS"), "{src}");
            // Key names built in Lua (from ARGV or a prefix) would escape the check above.
            for call in ["redis.call('", "redis.pcall('"] {
                for (i, _) in src.match_indices(call) {
                    let args = &src[i + call.len()..];
                    let first_arg = args.split_once(',').map_or("", |(_, a)| a.trim_start());
                    assert!(
                        first_arg.starts_with("KEYS[1]")
                            || first_arg.starts_with("key")
                            || args.starts_with("TYPE'")
                            || first_arg.is_empty(),
                        "a Redis call on something other than KEYS[1]: {}",
                        &args[..args.len().min(60)]
                    );
                }
            }
        }
    }

    /// A user's index and epoch share a slot whatever the user id holds (braces included),
    /// and the record keys of two sessions need not.
    #[tokio::test]
    async fn a_users_keys_share_a_slot() {
        let store_keys = |user: &str| {
            let prefix = "p:";
            let key = |what: &str| {
                let mut k = prefix.as_bytes().to_vec();
                k.extend_from_slice(b"{u:");
                k.extend_from_slice(user.as_bytes());
                k.extend_from_slice(b"}:");
                k.extend_from_slice(what.as_bytes());
                k
            };
            (key("sessions"), key("epoch"))
        };
        for user in ["alice", "", "a}b", "{x}", "}}", "ü", "a:b{c}d"] {
            let (index, epoch) = store_keys(user);
            assert_eq!(Slot::for_key(&index), Slot::for_key(&epoch), "{user:?}");
        }
    }

    #[test]
    fn cluster_urls_name_their_nodes() {
        let t = Target::parse("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001", false).unwrap();
        assert!(t.cluster && !t.tls);
        assert_eq!(
            t.nodes,
            ["redis://:pw@127.0.0.1:7000", "redis://:pw@127.0.0.1:7001"]
        );
        let t = Target::parse("rediss+cluster://a:1,b:2/?ca=/x.pem&protocol=resp3", false).unwrap();
        assert!(t.cluster && t.tls);
        assert_eq!(
            t.nodes,
            ["rediss://a:1?protocol=resp3", "rediss://b:2?protocol=resp3"]
        );
        assert_eq!(t.options.ca, Some(PathBuf::from("/x.pem")));
        let t = Target::parse("redis://127.0.0.1:7000", true).unwrap();
        assert!(t.cluster);
        let t = Target::parse("rediss://h:6380/2", false).unwrap();
        assert!(!t.cluster && t.tls);
        assert_eq!(t.nodes, ["rediss://h:6380/2"]);
        for bad in [
            "redis+cluster://a:1/3",
            "redis+cluster://",
            "unix+cluster:///x",
            "h:1",
        ] {
            let err = Target::parse(bad, false).err().expect(bad);
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn plaintext_to_a_remote_host_is_refused() {
        for ok in [
            "redis://127.0.0.1:6379",
            "redis://localhost",
            "redis://[::1]:6379",
        ] {
            check_plaintext(ok, false).unwrap();
        }
        check_plaintext("rediss://cache.example:6380", false).unwrap();
        let err = check_plaintext("redis://cache.example:6379", false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("allow_plaintext_to_remote_host"),
            "{err}"
        );
        check_plaintext("redis://cache.example:6379", true).unwrap();
    }

    #[test]
    fn commands_find_their_slot() {
        let mut c = redis::cmd("EVALSHA");
        c.arg("abc").arg(1).arg("p:{r:01}").arg("x");
        assert_eq!(slot_of(&c), Some(Slot::for_key("p:{r:01}")));
        let mut c = redis::cmd("ZADD");
        c.arg("p:{u:a}:sessions").arg(1).arg("m");
        assert_eq!(slot_of(&c), Some(Slot::for_key("p:{u:a}:sessions")));
        assert!(!reads_only(&c));
        let mut c = redis::cmd("HGETALL");
        c.arg("k");
        assert!(reads_only(&c));
    }
}
