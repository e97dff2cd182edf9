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
//! | `cloakroom:{x:<shard>}:<hour>` | sorted set | the purge index of one shard (the id hash's first byte mod 16, one hex digit) and one hour of expiry (unix time / 3600): id hashes scored by (at most) their expiry, for [`Store::purge_expired`]; it expires on the server at least an hour after both its hour and the absolute deadline of every session filed in it |
//! | `cloakroom:{x:<shard>}:buckets` | sorted set | the shard's directory: the hours that have a bucket (member and score the hour) |
//! | `cloakroom:expiry` | sorted set | the single purge index of older versions: no longer written; purge drains it (and the operator queries read it) until it is empty and gone |
//!
//! The parts in braces are Redis Cluster hash tags: a record's key is alone in its slot, both
//! keys of one user share a slot, and a purge shard's buckets and directory share a slot (16
//! shards: creates spread over 16 slots, not one hot key). Every script touches `KEYS[1]`
//! alone, but the two purge-index scripts, whose `KEYS[1]` and `KEYS[2]` are a bucket and
//! its own shard's directory; every multi-key command (the `MULTI` of
//! [`Store::sessions_of`]) names one key, so nothing here ever needs two slots at once, as
//! Redis Cluster requires (unit tests check the scripts and the keys' slots).
//!
//! # The purge index is bounded
//!
//! An entry is filed in the bucket of its shard and its expiry's hour, with `ZADD LT`, by a
//! script that also names the hour in the shard's directory and extends both keys' TTL (it
//! never shortens one) to an hour past the later of the bucket's hour and the record's
//! absolute deadline. No commit moves a record past its absolute deadline, so a bucket
//! outlives every record it points at, and [`Store::apply`] writes no index. A bucket then
//! expires by itself: entries of sessions that are gone cost memory for as long as those
//! sessions could have lived, never until a purge. Purge walks each shard's buckets up to
//! `now`'s hour (from the directories), files a record that turned out live under its
//! current expiry before dropping its old entry, and drops a bucket that is gone from its
//! directory (one script, so a concurrent index write cannot lose its bucket).
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
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash, Record, Store};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, Slot};
use redis::{Arg, Cmd, IntoConnectionInfo, Pipeline, Value};

use crate::transport;

mod builder;
mod codec;
mod conn;
mod scripts;

pub use builder::RedisStoreBuilder;
pub(crate) use codec::map_err;
use codec::*;
use conn::*;
use scripts::*;

/// The key prefix unless configured otherwise.
const DEFAULT_PREFIX: &str = "cloakroom:";

/// Server-side TTLs are capped at this many seconds (400 days), whatever the deadlines say.
const MAX_TTL_SECS: u64 = 400 * 24 * 3600;

/// How many expired candidates one purge round looks at, at most.
const PURGE_ROUND: usize = 256;

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
            net: crate::options::NetOptions::default(),
            cluster: false,
            replica_acks: None,
            replica_wait: None,
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

    /// The single purge index of stores before the buckets: no longer written, still
    /// drained by purge (and read by the operator queries) until it is empty.
    fn legacy_expiry_key(&self) -> String {
        format!("{}expiry", self.prefix)
    }

    /// The purge bucket of shard `shard` for expiries in hour `bucket`.
    fn bucket_key(&self, shard: u8, bucket: u64) -> String {
        bucket_key(&self.prefix, shard, bucket)
    }

    /// The buckets of shard `shard` that may have entries (a sorted set scored by bucket).
    fn directory_key(&self, shard: u8) -> String {
        directory_key(&self.prefix, shard)
    }

    /// The buckets the directories of `shards` name, as `(shard, hour)`, in one round trip:
    /// those of hours up to `last`, or all of them with `None`. `what` names the caller in
    /// errors.
    async fn buckets(
        &self,
        shards: &[u8],
        last: Option<u64>,
        what: &'static str,
    ) -> Result<Vec<(u8, u64)>, Error> {
        let last = last.map_or_else(|| "+inf".to_owned(), |hour| hour.to_string());
        let mut pipe = redis::pipe();
        for &shard in shards {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.directory_key(shard))
                .arg("-inf")
                .arg(&last);
        }
        let directories = self.bounded(what, pipe).await?;
        let mut buckets = Vec::new();
        for (&shard, reply) in shards.iter().zip(&directories) {
            let Value::Array(hours) = reply else {
                return Err(unexpected(what));
            };
            for hour in hours {
                let hour = bytes(hour)
                    .and_then(parse_u64)
                    .ok_or_else(|| unexpected(what))?;
                buckets.push((shard, hour));
            }
        }
        Ok(buckets)
    }

    /// The purge-index write that files `hex` (shard `shard`) under `score` (at most its
    /// expiry), keeping the bucket (and its directory) at least until an hour after both its
    /// own hour and `until` (the record's absolute deadline: no commit moves a record past
    /// it, so the bucket outlives every record it points at). `now` is the caller's.
    fn index_entry(&self, shard: u8, hex: &[u8], score: u64, until: u64, now: u64) -> Cmd {
        let bucket = score / BUCKET_SECS;
        let end = bucket.saturating_add(1).saturating_mul(BUCKET_SECS);
        let keep = (until.max(end) / BUCKET_SECS)
            .saturating_add(2)
            .saturating_mul(BUCKET_SECS);
        let ttl = keep
            .saturating_sub(now)
            .clamp(BUCKET_SECS, MAX_TTL_SECS)
            .saturating_mul(1000);
        let (bucket_s, score_s, ttl_s) = (bucket.to_string(), score.to_string(), ttl.to_string());
        self.scripts.index.call_on(
            &[&self.bucket_key(shard, bucket), &self.directory_key(shard)],
            &[
                score_s.as_bytes(),
                hex,
                bucket_s.as_bytes(),
                ttl_s.as_bytes(),
            ],
        )
    }
}

/// Purge buckets are this many seconds of expiry wide (an hour).
const BUCKET_SECS: u64 = 3600;

/// Purge buckets are split in this many shards (by the id hash's first byte), each its own
/// hash tag, so creates spread over that many cluster slots.
const SHARDS: u8 = 16;

fn bucket_key(prefix: &str, shard: u8, bucket: u64) -> String {
    format!("{prefix}{{x:{shard:x}}}:{bucket}")
}

fn directory_key(prefix: &str, shard: u8) -> String {
    format!("{prefix}{{x:{shard:x}}}:buckets")
}

fn shard_of(id: &IdHash) -> u8 {
    id.as_bytes()[0] % SHARDS
}

/// The shard of an id hash in hex (its first byte's low nibble is its second digit).
fn shard_of_hex(hex: &[u8]) -> Option<u8> {
    let digit = char::from(*hex.get(1)?).to_digit(16)?;
    u8::try_from(digit).ok().map(|d| d % SHARDS)
}

/// An index entry's id hash, checked (an entry is only ever used as a record key).
fn entry_id(member: &[u8]) -> Option<IdHash> {
    std::str::from_utf8(member)
        .ok()
        .and_then(|s| IdHash::from_hex(s).ok())
}

impl RedisStore {
    /// The index entries that go before a write of `record`, in the same round trip: an
    /// index may point at nothing, never miss a record. A user index is scored by (at least)
    /// the absolute deadline, which no commit or touch moves; the expiry index by (at most)
    /// the record's expiry.
    fn index_writes(&self, record: &Record, now: u64) -> Pipeline {
        let id = record.id_hash.to_hex();
        let e = record.expires_at();
        let mut pipe = redis::pipe();
        if let Some(user) = &record.user_id {
            pipe.cmd("ZADD")
                .arg(self.index_key(user))
                .arg("GT")
                .arg(record.absolute_deadline.max(e))
                .arg(&id);
        }
        pipe.add_command(self.index_entry(
            shard_of(&record.id_hash),
            id.as_bytes(),
            e,
            record.absolute_deadline.max(e),
            now,
        ));
        pipe
    }
}

impl RedisStore {
    /// Purges through one purge-index key (`bucket` names its shard and hour; `None` for
    /// the legacy key): deletes up to `limit` records whose entries are scored at or before
    /// `now` and that are dead at `now`, drops entries that point at nothing, and files
    /// live records (touched or committed since) under their expiry before letting go of
    /// the old entry. Returns how many records it deleted.
    async fn purge_index(
        &self,
        key: &str,
        bucket: Option<(u8, u64)>,
        now: u64,
        limit: usize,
    ) -> Result<usize, Error> {
        let now_s = now.to_string();
        let mut deleted = 0;
        while deleted < limit {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(key)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg((limit - deleted).min(PURGE_ROUND));
            let Value::Array(members) = self.one("purge_expired", cmd).await? else {
                return Err(unexpected("purge_expired"));
            };
            if members.is_empty() {
                break;
            }
            let mut entries = Vec::with_capacity(members.len());
            let mut pipe = redis::pipe();
            let mut foreign = Vec::new();
            for m in &members {
                let hex = bytes(m).ok_or_else(|| unexpected("purge_expired"))?;
                match entry_id(hex) {
                    Some(id) => {
                        pipe.add_command(
                            self.scripts
                                .purge
                                .call(&self.record_key(&id), &[now_s.as_bytes()]),
                        );
                        entries.push((id, hex.to_vec()));
                    }
                    // Not an id hash: not a key of ours to touch, only an entry to drop.
                    None => foreign.push(hex.to_vec()),
                }
            }
            let replies = if entries.is_empty() {
                Vec::new()
            } else {
                self.bounded("purge_expired", pipe).await?
            };
            // Live records are filed again before their old entries go (index first).
            let mut refile = redis::pipe();
            let mut follow = redis::pipe();
            if !foreign.is_empty() {
                follow.cmd("ZREM").arg(key).arg(&foreign);
            }
            for ((id, hex), reply) in entries.iter().zip(&replies) {
                match status(reply) {
                    Some((2, rest)) => {
                        let number = |i: usize| rest.get(i).and_then(bytes).and_then(parse_u64);
                        let e = number(0).ok_or_else(|| unexpected("purge_expired"))?;
                        let a = number(1).unwrap_or(e).max(e);
                        match bucket {
                            Some((_, b)) if e / BUCKET_SECS == b => {
                                follow.cmd("ZADD").arg(key).arg("XX").arg(e).arg(hex);
                            }
                            _ => {
                                refile.add_command(self.index_entry(shard_of(id), hex, e, a, now));
                                follow.cmd("ZREM").arg(key).arg(hex);
                            }
                        }
                    }
                    Some((1, rest)) => {
                        deleted += 1;
                        follow.cmd("ZREM").arg(key).arg(hex);
                        if let Some(user) = rest.first().and_then(bytes).and_then(untag_user) {
                            follow.cmd("ZREM").arg(self.index_key(&user)).arg(hex);
                        }
                    }
                    _ => {
                        follow.cmd("ZREM").arg(key).arg(hex);
                    }
                }
            }
            if !refile.is_empty() {
                self.bounded("purge_expired (index)", refile).await?;
            }
            if !follow.is_empty() {
                self.bounded("purge_expired (index)", follow).await?;
            }
        }
        Ok(deleted)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let f = fields(record, record.version, now)?;
        let mut pipe = self.index_writes(record, now);
        pipe.add_command(self.scripts.create.call_with_data(
            &self.record_key(&record.id_hash),
            &f.args(&[]),
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
        let key = self.record_key(&record.id_hash);
        let expected = record.version.to_string();
        let now_s = now.to_string();
        let mut pipe = self.index_writes(record, now);
        pipe.add_command(self.scripts.update.call_with_data(
            &key,
            &f.args(&[expected.as_bytes(), now_s.as_bytes()]),
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
        let cmd = self.apply_command(id, changes, now, idle_deadline)?;
        let reply = self.one("apply", cmd).await?;
        match self.apply_reply(id, &reply)? {
            Some(applied) => Ok(applied),
            // Stored by an older version of this store: one compare-and-swap commit
            // rewrites it in the current layout.
            None => {
                cloakroom::apply_by_compare_and_swap(self, id, changes, now, idle_deadline).await
            }
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
        // The bucket is kept until an hour past `idle_deadline` at least; the entry the
        // record's create or update made lives until past its absolute deadline.
        let shard = shard_of(id);
        pipe.add_command(self.index_entry(
            shard,
            hex.as_bytes(),
            idle_deadline,
            idle_deadline,
            now,
        ));
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
                    pipe.add_command(self.index_entry(shard, hex.as_bytes(), idle, idle, now));
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
                // Best effort: an entry filed under an earlier score is dropped by purge.
                if let Some(e) = rest.get(1).and_then(bytes).and_then(parse_u64) {
                    let key = self.bucket_key(shard_of(id), e / BUCKET_SECS);
                    pipe.cmd("ZREM").arg(key).arg(&hex);
                }
                if !pipe.is_empty() {
                    self.bounded("delete (index)", pipe).await?;
                }
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
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(&index).arg(&ids);
        let mut deleted = 0;
        for (hex, reply) in ids.iter().zip(&replies) {
            let Some((1, rest)) = status(reply) else {
                continue;
            };
            deleted += 1;
            // Best effort, as in `delete`: purge drops what is left.
            let e = rest.first().and_then(bytes).and_then(parse_u64);
            if let (Some(e), Some(shard)) = (e, shard_of_hex(hex.as_bytes())) {
                pipe.cmd("ZREM")
                    .arg(self.bucket_key(shard, e / BUCKET_SECS))
                    .arg(hex);
            }
        }
        self.bounded("revoke_user_sessions (index)", pipe).await?;
        Ok(deleted)
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let reply = self.one("user_epoch", self.epoch_command(user)).await?;
        epoch_reply(&reply)
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let key = String::from_utf8_lossy(&self.epoch_key(user)).into_owned();
        let reply = self
            .one("bump_user_epoch", self.scripts.bump.call(&key, &[]))
            .await?;
        match status(&reply) {
            Some((2, [n])) => int(n)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| unexpected("bump_user_epoch")),
            Some((-1, _)) => Err(not_ours(&key)),
            _ => Err(unexpected("bump_user_epoch")),
        }
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        // The single index of older stores first, until it is empty; then each shard's
        // buckets up to `now`'s, oldest first.
        let mut deleted = self
            .purge_index(&self.legacy_expiry_key(), None, now, limit)
            .await?;
        if deleted >= limit {
            return Ok(deleted);
        }
        let all: Vec<u8> = (0..SHARDS).collect();
        let mut buckets = self
            .buckets(&all, Some(now / BUCKET_SECS), "purge_expired (buckets)")
            .await?;
        buckets.sort_unstable_by_key(|&(shard, bucket)| (bucket, shard));
        for (shard, bucket) in buckets {
            if deleted >= limit {
                break;
            }
            let key = self.bucket_key(shard, bucket);
            deleted += self
                .purge_index(&key, Some((shard, bucket)), now, limit - deleted)
                .await?;
            if deleted < limit {
                // Walked to its end: a bucket whose key is gone leaves the directory.
                let b = bucket.to_string();
                let forget = self
                    .scripts
                    .forget
                    .call_on(&[&key, &self.directory_key(shard)], &[b.as_bytes()]);
                self.one("purge_expired (directory)", forget).await?;
            }
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

/// The commands of [`Store::apply`], [`Store::load`] and [`Store::user_epoch`] apart from
/// their round trip, for the session cache (`crate::cache`), which sends them on its own
/// tracking connection.
impl RedisStore {
    pub(crate) fn apply_command(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Cmd, Error> {
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
        Ok(cmd)
    }

    /// What the apply script's `reply` means: `Ok(None)` for a record stored by an older
    /// version of this store (commit it with [`Store::apply`]).
    pub(crate) fn apply_reply(&self, id: &IdHash, reply: &Value) -> Result<Option<Applied>, Error> {
        match status(reply) {
            Some((2, rest)) => {
                let number = |i: usize| {
                    rest.get(i)
                        .and_then(int)
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| unexpected("apply"))
                };
                Ok(Some(Applied::new(number(0)?, number(1)?)))
            }
            Some((0, _)) => Err(Error::not_found()),
            Some((-1, _)) => Err(not_ours(&self.record_key(id))),
            Some((-2, _)) => Ok(None),
            _ => Err(unexpected("apply")),
        }
    }

    pub(crate) fn epoch_command(&self, user: &str) -> Cmd {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.epoch_key(user));
        cmd
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster { .. })
    }

    /// How long one round trip may take (connect timeout plus command timeout).
    pub(crate) fn round_trip_bound(&self) -> Duration {
        self.bound
    }
}

pub(crate) fn epoch_reply(reply: &Value) -> Result<u64, Error> {
    match reply {
        Value::Nil => Ok(0),
        v => bytes(v)
            .and_then(parse_u64)
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, "a Redis user epoch is not a number")),
    }
}

// Operator queries (find by id prefix, stats).
mod admin;
#[cfg(test)]
mod tests;
