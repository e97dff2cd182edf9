//! The memcached store (feature `memcached`): records as items that expire on the server,
//! CAS with `gets`/`cas`, the user index as a CAS-updated item, the purge index as
//! append-only items that expire. Speaks
//! memcached's text protocol over TCP itself (a small client, [`client`] below).
//!
//! # What memcached cannot promise
//!
//! memcached is a cache. Read this before choosing it:
//!
//! - **Eviction logs people out.** Under memory pressure memcached evicts items, least
//!   recently used first: a session evicted is a user logged out, with no error anywhere.
//!   Give it memory enough for every live session (`-m`), and watch its `evictions` counter.
//! - **A restart logs everyone out.** Nothing is written to disk.
//! - **User epochs can be lost.** An epoch is an item like any other; if it is evicted it reads
//!   0 again, and cookies of the client and hybrid modes that an epoch bump had killed come
//!   back to life until they expire. Use this store with the server mode only (the default),
//!   where revocation deletes the records themselves, or keep epochs elsewhere.
//! - **Purge is the server's job.** Records carry the server's TTL (their earlier deadline),
//!   so memcached drops them itself. [`Store::purge_expired`] finds the records dead by the
//!   caller's clock through a purge index kept off the write path: one item per 10 minutes
//!   of expiry and per 64th of the id space, written with `append` (no read, no `cas`), each
//!   expiring a day after its 10 minutes, and a directory of those buckets. A create costs
//!   the same whatever was created before it. The index is best effort: a full item (the
//!   item limit) takes no more entries and an evicted one loses its entries; those records
//!   go by their TTL alone.
//! - **Size.** A record larger than memcached's default item limit (1 MiB, less room for
//!   the key) is refused as [`ErrorKind::TooLarge`] before it is sent, and no value larger than
//!   that is read from the server.
//! - **Indexes are best effort.** A user's index is one item holding their id hashes; it is
//!   updated with `gets`/`cas` and read with pruning. If it is evicted, "sign out other
//!   sessions" cannot find that user's older sessions (they still die at their deadline).
//!
//! # Guarantees it does keep
//!
//! - [`Store::update`] is compare-and-swap twice over: the record's version is checked, and
//!   the write is a `cas` on the `gets` token, so no concurrent write is lost.
//! - [`Store::apply`] (a request's commit) cannot be one atomic step: memcached has no
//!   server-side scripting. It is a `gets`/`cas` loop inside the store: read, merge the
//!   changed keys, `cas`; when another writer got in between, wait a randomised backoff
//!   (100 µs doubling to 10 ms) and go again. It is bounded by time, not by a count (the
//!   contention budget, 5 s unless [`MemcachedStoreBuilder::with_contention_budget`] says
//!   otherwise; then [`ErrorKind::Unavailable`]), so overlapping requests of one session
//!   queue up rather than fail. Within one process, commits and touches of one session
//!   first take turns on an in-process lock, so the loop only goes round again when another
//!   process wrote in between. The same loop serves the index items.
//! - A record expires on the server at its earlier deadline: the TTL is the deadline minus
//!   the caller's `now` (the record's `last_seen` on create), as memcached wants relative
//!   TTLs up to 30 days; longer ones are turned into unix times with the system clock.
//! - Every round trip is bounded by the command timeout, every connection attempt by the
//!   connect timeout (1 s each by default); a down server is [`ErrorKind::Unavailable`], and
//!   connections are made again once it is back.
//!
//! # Keys
//!
//! `<prefix>r:<id hash hex>` the record, `<prefix>u:<SHA-256 of the user id, hex>` the user's
//! index, `<prefix>e:<same>` the user's epoch, `<prefix>x:<bucket>:<shard>` the purge index
//! items (bucket = expiry / 600, shard = the id hash's first byte mod 64), `<prefix>x:dir`
//! the purge directory.
//! User ids are hashed because memcached keys are at most 250 bytes without spaces.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash, Record, Store};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use self::client::{Conn, McError, Reply};

mod builder;
mod index;

pub use builder::MemcachedStoreBuilder;

const DEFAULT_PREFIX: &str = "cloakroom:";

/// `flags` of every item this store writes; an item with other flags is not ours.
const FLAGS_RECORD: u32 = 0xC10A_0001;
const FLAGS_INDEX: u32 = 0xC10A_0002;
const FLAGS_DIRECTORY: u32 = 0xC10A_0003;

/// memcached's default item limit (`-I 1m`). A record larger than this (less room for the
/// key and item header) is refused before it is sent, and no value larger than this is read
/// from the server.
pub(crate) const ITEM_LIMIT: usize = 1 << 20;
/// Room left in an item for its key and header.
const ITEM_OVERHEAD: usize = 512;

/// The purge index: records by expiry, in buckets of this many seconds ...
const BUCKET_SECS: u64 = 600;
/// ... each spread over this many items (by the id hash's first byte) ...
const BUCKET_SHARDS: u8 = 64;
/// ... that expire on the server this long after their bucket ends.
const BUCKET_GRACE: u64 = 24 * 3600;

/// memcached reads TTLs above this many seconds as unix times.
const RELATIVE_TTL_MAX: u64 = 30 * 24 * 3600;

/// How long a `gets`/`cas` loop keeps retrying while other writers get in between, unless
/// configured otherwise ([`MemcachedStoreBuilder::with_contention_budget`]).
const DEFAULT_CONTENTION_BUDGET: Duration = Duration::from_secs(5);

/// Whether a retry loop goes round again: the first round always does; a later one waits
/// its [`backoff`] first, unless `give_up` has passed.
async fn another_round(attempt: u32, give_up: Instant) -> bool {
    if attempt > 0 {
        if Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    true
}

/// The pause before retry number `attempt` of a `gets`/`cas` loop: 100 µs doubling up to
/// 10 ms, each drawn at random from its upper half, so writers that collided spread out
/// instead of colliding again.
fn backoff(attempt: u32) -> Duration {
    let ceiling = (100u64 << attempt.min(7)).min(10_000);
    let random = RandomState::new().build_hasher().finish();
    Duration::from_micros(ceiling / 2 + random % (ceiling / 2 + 1))
}

/// One index entry: an id hash and an expiry (upper bound in a user index, lower bound in a
/// purge shard).
const ENTRY: usize = 40;

struct Inner {
    addr: String,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    contention_budget: Duration,
    /// Commits and touches of one record in this process take turns (see `stripes`).
    stripes: crate::stripes::Stripes,
    permits: Semaphore,
    idle: Mutex<Vec<Conn>>,
}

/// Sessions in memcached. Cheap to clone: clones share one pool of connections.
///
/// ```no_run
/// # async fn example() -> Result<(), cloakroom::Error> {
/// use cloakroom_stores::MemcachedStore;
///
/// let store = MemcachedStore::builder("127.0.0.1:11211")
///     .with_prefix("myapp:")
///     .connect()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemcachedStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner {
            addr,
            prefix,
            connect_timeout,
            command_timeout,
            contention_budget,
            stripes: _,
            permits: _,
            idle: _,
        } = &*self.inner;
        f.debug_struct("MemcachedStore")
            .field("addr", addr)
            .field("prefix", prefix)
            .field("connect_timeout", connect_timeout)
            .field("command_timeout", command_timeout)
            .field("contention_budget", contention_budget)
            .finish_non_exhaustive()
    }
}

fn exptime(deadline: u64, reference: u64) -> u32 {
    let ttl = deadline.saturating_sub(reference).max(1);
    if ttl <= RELATIVE_TTL_MAX {
        return u32::try_from(ttl).unwrap_or(u32::MAX);
    }
    // Longer than memcached's relative range: a unix time by the system clock.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(now.saturating_add(ttl)).unwrap_or(u32::MAX)
}

fn too_large(key: &str, len: usize) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!(
            "the memcached item {key} would be {len} bytes, over memcached's item limit \
             ({ITEM_LIMIT} bytes by default)"
        ),
    )
}

fn entries(key: &str, bytes: &[u8]) -> Result<Vec<(IdHash, u64)>, Error> {
    if !bytes.len().is_multiple_of(ENTRY) {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("the memcached index {key} is not a whole number of entries"),
        ));
    }
    Ok(bytes
        .chunks_exact(ENTRY)
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(&c[..32]);
            let mut e = [0u8; 8];
            e.copy_from_slice(&c[32..]);
            (IdHash::from_bytes(id), u64::from_be_bytes(e))
        })
        .collect())
}

fn encode_entries(list: &[(IdHash, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len() * ENTRY);
    for (id, e) in list {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&e.to_be_bytes());
    }
    out
}

fn not_ours(key: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("the memcached item {key} was not written by this store"),
    )
}

#[async_trait]
impl Store for MemcachedStore {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let bytes = record.encode()?;
        if bytes.len() + ITEM_OVERHEAD > ITEM_LIMIT {
            return Err(too_large(&self.record_key(&record.id_hash), bytes.len()));
        }
        // Index entries first: an index may point at nothing, never miss a record.
        self.index_record(record).await?;
        let key = self.record_key(&record.id_hash);
        let ttl = exptime(record.expires_at(), now);
        let stored = self
            .run("add", async |c| {
                c.store("add", &key, FLAGS_RECORD, ttl, &bytes, None).await
            })
            .await?;
        match stored {
            Reply::Stored => Ok(()),
            Reply::TooLarge => Err(too_large(&key, bytes.len())),
            _ => Err(Error::conflict()),
        }
    }

    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        Ok(self
            .gets_record(id)
            .await?
            .map(|(r, _)| r)
            .filter(|r| r.is_live(now)))
    }

    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        let mut write = record.clone();
        write.version = record.version.saturating_add(1);
        // Compare-and-swap on the version, over the same `gets`/`cas` loop as apply and
        // touch (which also keeps the indexes ahead of the record).
        let written = self
            .cas_loop(&record.id_hash, now, |current| {
                if current.version != record.version {
                    return Err(Error::conflict());
                }
                Ok(write.clone())
            })
            .await?;
        Ok(written.version)
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        // No server-side scripting in memcached: a `gets`/`cas` loop that retries until it
        // wins (bounded by the contention budget, not by a count). Writers in this process
        // take turns first, so only other processes' writes make it go round again.
        let _turn = self.inner.stripes.turn(id).await;
        let next = self
            .cas_loop(id, now, |current| {
                cloakroom::apply_changes(current, changes, now, idle_deadline)
            })
            .await?;
        Ok(Applied::new(next.version, next.idle_deadline))
    }

    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        let _turn = self.inner.stripes.turn(id).await;
        self.cas_loop(id, now, |mut current| {
            current.last_seen = now;
            current.idle_deadline = idle_deadline.min(current.absolute_deadline);
            Ok(current)
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        // Index entries are pruned when read: a missing record is dropped from them.
        let key = self.record_key(id);
        self.run("delete", async |c| c.delete(&key).await).await
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let index = self.index_key(user);
        let item = self
            .run("get (index)", async |c| c.gets_one(&index).await)
            .await?;
        let list = match &item {
            None => return Ok(Vec::new()),
            Some(item) if item.flags == FLAGS_INDEX => entries(&index, &item.data)?,
            Some(_) => return Err(not_ours(&index)),
        };
        let candidates: Vec<IdHash> = list
            .iter()
            .filter(|(_, e)| *e > now)
            .map(|(i, _)| *i)
            .collect();
        let keys: Vec<String> = candidates.iter().map(|id| self.record_key(id)).collect();
        let items = if keys.is_empty() {
            Vec::new()
        } else {
            self.run("get (records)", async |c| c.get_many(&keys).await)
                .await?
        };
        let mut out = Vec::new();
        let mut keep: Vec<IdHash> = Vec::new();
        for (id, key) in candidates.iter().zip(&keys) {
            let Some(item) = items.iter().find(|i| &i.key == key) else {
                continue; // gone: pruned below
            };
            if item.flags != FLAGS_RECORD {
                return Err(not_ours(key));
            }
            let record = Record::decode(&item.data)?;
            if record.user_id.as_deref() != Some(user) || record.id_hash != *id {
                continue; // moved to another user: pruned below
            }
            keep.push(*id);
            if record.is_live(now) {
                out.push(record);
            }
        }
        if keep.len() != list.len() {
            // Best effort: a concurrent writer wins and the next read prunes again.
            let pruned = self
                .modify_index(&index, |l| {
                    let before = l.len();
                    l.retain(|(id, e)| *e > now && (keep.contains(id) || !candidates.contains(id)));
                    l.len() != before
                })
                .await;
            if let Err(e) = pruned {
                tracing::debug!(error = %e, "pruning a memcached user index failed");
            }
        }
        Ok(out)
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        let index = self.index_key(user);
        let item = self
            .run("get (index)", async |c| c.gets_one(&index).await)
            .await?;
        let list = match &item {
            None => return Ok(0),
            Some(item) if item.flags == FLAGS_INDEX => entries(&index, &item.data)?,
            Some(_) => return Err(not_ours(&index)),
        };
        let targets: Vec<IdHash> = list
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| Some(id) != except)
            .collect();
        let mut deleted = 0;
        for id in &targets {
            let belongs = match self.gets_record(id).await {
                Ok(Some((r, _))) => r.user_id.as_deref() == Some(user),
                Ok(None) => false,
                // Garbage listed under this user: delete it too.
                Err(e) if e.kind() == ErrorKind::Corrupt => true,
                Err(e) => return Err(e),
            };
            if belongs {
                let key = self.record_key(id);
                if self.run("delete", async |c| c.delete(&key).await).await? {
                    deleted += 1;
                }
            }
        }
        self.modify_index(&index, |l| {
            let before = l.len();
            l.retain(|(id, _)| !targets.contains(id));
            l.len() != before
        })
        .await?;
        Ok(deleted)
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let key = self.epoch_key(user);
        let item = self
            .run("get (epoch)", async |c| c.gets_one(&key).await)
            .await?;
        match item {
            None => Ok(0),
            Some(item) => std::str::from_utf8(&item.data)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| not_ours(&key)),
        }
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let key = self.epoch_key(user);
        // `incr` fails only while the item is missing, and `add` only if another bump created
        // it meanwhile: a few rounds always suffice.
        for _ in 0..4 {
            if let Some(n) = self.run("incr", async |c| c.incr(&key).await).await? {
                return Ok(n);
            }
            let stored = self
                .run("add (epoch)", async |c| {
                    c.store("add", &key, 0, 0, b"1", None).await
                })
                .await?;
            if stored == Reply::Stored {
                return Ok(1);
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "bumping a memcached epoch kept racing",
        ))
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let dkey = self.directory_key();
        let directory = self
            .run("get (purge directory)", async |c| c.gets_one(&dkey).await)
            .await?;
        let mut buckets: Vec<u64> = match &directory {
            None => return Ok(0),
            Some(item) if item.flags == FLAGS_DIRECTORY && item.data.len() % 8 == 0 => item
                .data
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            Some(_) => return Err(not_ours(&dkey)),
        };
        buckets.sort_unstable();
        buckets.dedup();
        let mut deleted = 0;
        // Buckets whose items were emptied and whose time has passed: out of the directory.
        let mut finished: Vec<u64> = Vec::new();
        for &bucket in buckets
            .iter()
            .filter(|b| b.saturating_mul(BUCKET_SECS) <= now)
        {
            if deleted >= limit {
                break;
            }
            let keys: Vec<String> = (0..BUCKET_SHARDS)
                .map(|shard| self.bucket_key(bucket, shard))
                .collect();
            let items = self
                .run("get (purge index)", async |c| c.get_many(&keys).await)
                .await?;
            let mut emptied = true;
            for item in &items {
                if deleted >= limit {
                    emptied = false;
                    break;
                }
                if item.flags != FLAGS_INDEX {
                    return Err(not_ours(&item.key));
                }
                let (n, left) = self
                    .purge_item(bucket, &item.key, &item.data, now, limit - deleted)
                    .await?;
                deleted += n;
                emptied &= left == 0;
            }
            let past = (bucket + 1).saturating_mul(BUCKET_SECS) <= now;
            if emptied && past {
                finished.push(bucket);
            }
        }
        if !finished.is_empty() {
            // The directory is small and only purge rewrites it (creates only append).
            let give_up = Instant::now() + self.inner.contention_budget;
            for attempt in 0.. {
                if !another_round(attempt, give_up).await {
                    break;
                }
                let Some(item) = self
                    .run("gets (purge directory)", async |c| c.gets_one(&dkey).await)
                    .await?
                else {
                    break;
                };
                let mut kept: Vec<u64> = item
                    .data
                    .chunks_exact(8)
                    .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
                    .filter(|b| !finished.contains(b))
                    .collect();
                kept.sort_unstable();
                kept.dedup();
                let bytes: Vec<u8> = kept.iter().flat_map(|b| b.to_be_bytes()).collect();
                let cas = item.cas;
                let stored = self
                    .run("cas (purge directory)", async |c| {
                        c.store("cas", &dkey, FLAGS_DIRECTORY, 0, &bytes, Some(cas))
                            .await
                    })
                    .await?;
                if stored != Reply::Exists {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

impl MemcachedStore {
    /// Purges the due entries of one purge-index item (at most `limit` deletions): records
    /// dead at `now` are deleted, records live after all (touched since) move to the bucket
    /// of their expiry. Returns how many were deleted and how many entries the item keeps.
    async fn purge_item(
        &self,
        bucket: u64,
        key: &str,
        data: &[u8],
        now: u64,
        limit: usize,
    ) -> Result<(usize, usize), Error> {
        let list = entries(key, data)?;
        let due: Vec<IdHash> = list
            .iter()
            .filter(|(_, e)| *e <= now)
            .map(|(i, _)| *i)
            .collect();
        if due.is_empty() {
            return Ok((0, list.len()));
        }
        let keys: Vec<String> = due.iter().map(|id| self.record_key(id)).collect();
        let items = self
            .run("get (purge)", async |c| c.get_many(&keys).await)
            .await?;
        let mut deleted = 0;
        let mut drop: Vec<IdHash> = Vec::new();
        let mut rescore: Vec<(IdHash, u64)> = Vec::new();
        for (id, rkey) in due.iter().zip(&keys) {
            if deleted >= limit {
                break;
            }
            let Some(item) = items.iter().find(|i| &i.key == rkey) else {
                drop.push(*id); // dropped by its TTL (or deleted) already
                continue;
            };
            let live = (item.flags == FLAGS_RECORD)
                .then(|| Record::decode(&item.data).ok())
                .flatten()
                .filter(|r| r.is_live(now));
            match live {
                Some(r) if r.expires_at() / BUCKET_SECS == bucket => {
                    rescore.push((*id, r.expires_at()));
                }
                Some(r) => {
                    self.purge_entry(*id, r.expires_at(), now).await?;
                    drop.push(*id);
                }
                None => {
                    if self.run("delete", async |c| c.delete(rkey).await).await? {
                        deleted += 1;
                    }
                    drop.push(*id);
                }
            }
        }
        let ttl = exptime(
            (bucket + 1)
                .saturating_mul(BUCKET_SECS)
                .saturating_add(BUCKET_GRACE),
            now,
        );
        let mut left = 0;
        self.modify_item(key, ttl, |l| {
            l.retain(|(id, _)| !drop.contains(id));
            for (id, e) in &rescore {
                if let Some(entry) = l.iter_mut().find(|(i, _)| i == id) {
                    entry.1 = *e;
                }
            }
            left = l.len();
            true
        })
        .await?;
        Ok((deleted, left))
    }
}

mod client;
