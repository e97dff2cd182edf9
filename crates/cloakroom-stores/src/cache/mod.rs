//! Reads without a round trip: [`CachedStore`], a bounded in-process cache of recently
//! loaded session records and user epochs in front of any store, kept coherent with every
//! writer of the store (other processes, other machines, the operator CLI) by the backend's
//! own invalidation channel. One file per channel:
//!
//! | store | channel | file |
//! |---|---|---|
//! | SQLite | `PRAGMA data_version`, read on a connection of the cache's own by a watcher thread every 0.5 ms (and by a request itself when the last answer is older than 1 ms); a change drops the whole cache unless the store's writer connection (whose own `data_version` moves for every commit but its own) says no other connection committed | `sqlite.rs` |
//! | Redis | client-side caching: `CLIENT TRACKING ON NOLOOP` on a RESP3 connection of the cache's own, which makes the cache's loads, epoch reads and write-through commits; each `invalidate` push (a change by any other client of a key it read) drops those keys | `redis.rs` |
//! | PostgreSQL | `LISTEN`: triggers on the store's tables (created by the cache, idempotently, so every writer is covered) `pg_notify` each changed id hash and user | `postgres.rs` |
//! | the daemon (`cloakroomd+…`) | none: the daemon keeps the cache itself, next to the store, so a client cache would only add a second copy to invalidate | — |
//!
//! # Safety rules
//!
//! - A hit is served only while the channel is up. When it is lost (the connection closes,
//!   a heartbeat goes unanswered, `PRAGMA data_version` fails), the whole cache is dropped and
//!   every read goes to the store until the channel is back (and the cache starts empty).
//! - A record read from the store enters the cache only if no invalidation and no write of
//!   this process happened between the start of the read and its answer (one generation
//!   counter), so a slow answer never brings back what an invalidation already removed. A
//!   commit written through (below) leaves the generation alone and raises its record's
//!   version floor instead: a read holding an older version is refused, and a cached
//!   record is never replaced by an older version.
//! - Every write of this process evicts the record (or user) before and after it, except a
//!   commit ([`Store::apply`]) written through by a channel that does not echo it (Redis,
//!   whose commit goes over the channel's own connection; SQLite, whose channel tells this
//!   store's commits from other connections'): the cached record stays while it
//!   runs (a load concurrent with a commit may see either side of it), and when the store
//!   answers, the changes are applied to the cached record here if it is the version the
//!   store applied them to (the returned version minus one) and the result is checked
//!   against the version and idle deadline the store returned; any other case evicts it.
//!   So a change by another writer that the cache has not heard of yet (the version is
//!   further on) is never papered over, and overlapping commits of one session write
//!   through one after the other. Any other writer's change after the commit is still
//!   pushed and evicts it.
//! - Nothing absent is cached: a missing session is always asked of the store.
//!
//! So a session logged out or revoked anywhere is refused by every process within the time
//! its channel takes to deliver the change: `PRAGMA data_version` is read again once its last
//! answer is 1 ms old (so at most 1 ms), a Redis push or a PostgreSQL notification arrives within a fraction of
//! a millisecond on a LAN (tests/cache.rs measures it with two processes). A channel that dies
//! silently (a network partition without a reset) is noticed by the heartbeat (every
//! [`HEARTBEAT`], answered within [`HEARTBEAT`]), so in that case alone stale hits can last up
//! to twice that.
//!
//! On PostgreSQL, writes by this process also come back through the channel (a
//! notification names no writer), so a record written here is read once from the store
//! after its write. On Redis and SQLite a commit of a cached session is written through, so
//! a request that loads and commits costs one store operation (the commit).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash, Record, Store};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

/// How often a Redis or PostgreSQL channel is pinged, and how long the answer may take,
/// before the channel counts as lost.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);

/// How long a Redis or PostgreSQL channel waits before it reconnects after losing its
/// connection (then twice as long after each failed attempt, up to [`HEARTBEAT`]). The cache
/// is bypassed meanwhile.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The default number of records (and, separately, user epochs) a cache keeps.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What a cache has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Loads and epoch reads answered from memory.
    pub hits: u64,
    /// Loads and epoch reads that went to the store while the channel was up.
    pub misses: u64,
    /// Loads and epoch reads that went to the store because the channel was down.
    pub bypassed: u64,
    /// Invalidations received (one per key, or one per whole-cache drop).
    pub invalidations: u64,
    /// Times the channel was lost.
    pub lost: u64,
    /// Commits whose result was put into the cache (written through) rather than evicted,
    /// so the next load of the session is a hit.
    pub written_through: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed: AtomicU64,
    invalidations: AtomicU64,
    lost: AtomicU64,
    written_through: AtomicU64,
}

struct State {
    records: HashMap<IdHash, Record>,
    epochs: HashMap<String, u64>,
    /// Bumped by every invalidation and every write of this process: a read or write fills
    /// the cache only if it is unchanged since the operation started.
    generation: u64,
    /// Whether the invalidation channel is up: hits and fills only then.
    online: bool,
    /// The version each record has in the store after this process's last commit of it (a
    /// commit written through or evicted by [`Cache::commit_through`], which leaves the
    /// generation alone): a read that began before that commit is refused by its version,
    /// so the commits of one session do not keep refusing every fill of it. Cleared, with
    /// the generation moved on, when it holds `capacity` entries.
    floors: HashMap<IdHash, u64>,
}

/// The shared core: the maps, the generation, the channel's state. The channels hold it too.
pub(crate) struct Cache {
    state: Mutex<State>,
    capacity: usize,
    counters: Counters,
}

/// What an operation saw of the cache when it started; see [`Cache::fill`].
#[derive(Clone, Copy)]
pub(crate) struct Ticket(Option<u64>);

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                records: HashMap::new(),
                epochs: HashMap::new(),
                generation: 0,
                online: false,
                floors: HashMap::new(),
            }),
            capacity,
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can be left half-changed by a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel is up (again): start from an empty cache.
    pub(crate) fn online(&self) {
        let mut s = self.lock();
        s.records.clear();
        s.epochs.clear();
        s.floors.clear();
        s.generation = s.generation.wrapping_add(1);
        s.online = true;
    }

    /// The channel is lost: drop everything and bypass the cache until [`Cache::online`].
    pub(crate) fn offline(&self) {
        let mut s = self.lock();
        if s.online {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
        s.records.clear();
        s.epochs.clear();
        s.floors.clear();
        s.generation = s.generation.wrapping_add(1);
        s.online = false;
    }

    pub(crate) fn is_online(&self) -> bool {
        self.lock().online
    }

    /// Something changed, we do not know what: drop everything.
    pub(crate) fn invalidate_all(&self) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        s.records.clear();
        s.epochs.clear();
        s.floors.clear();
        s.generation = s.generation.wrapping_add(1);
    }

    /// The record `id` changed.
    pub(crate) fn invalidate_record(&self, id: &IdHash) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        s.records.remove(id);
        s.generation = s.generation.wrapping_add(1);
    }

    /// The epoch of `user` changed.
    pub(crate) fn invalidate_user(&self, user: &str) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        s.epochs.remove(user);
        s.generation = s.generation.wrapping_add(1);
    }

    /// This process is about to write, or has written: forget what it changes.
    fn wrote(&self, change: impl FnOnce(&mut State)) {
        let mut s = self.lock();
        change(&mut s);
        s.generation = s.generation.wrapping_add(1);
    }

    /// A commit of `id` ended on a channel that does not echo it (Redis `NOLOOP`), with
    /// the store's answer `applied`. The cached record stays in the cache while the commit
    /// runs (a load concurrent with the commit may see the state before it); now, if the
    /// channel is up and the cached record is the version the commit was applied to (one
    /// below `applied.version`), `changes` are applied to it here and the result, checked
    /// against the version and idle deadline the store returned, replaces it. A cached
    /// record at or past the commit's version (read after the commit) stays. Anything
    /// else evicts the record: another writer's change the cache has not heard of yet
    /// (its version is further on), an invalidation that already removed it, commits of
    /// one session whose answers were taken out of order.
    ///
    /// Two overlapping commits of one session are both written through when their answers
    /// come back in the order the store applied them (one connection answers in order).
    fn commit_through(
        &self,
        id: &IdHash,
        applied: &Applied,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) {
        let mut s = self.lock();
        let next = match s.records.get(id) {
            // A version at or past this commit's was read from the store after the commit
            // (its state includes it): kept as it is.
            Some(cached) if s.online && cached.version >= applied.version => Keep::Cached,
            Some(base) if s.online && base.version.checked_add(1) == Some(applied.version) => {
                cloakroom::apply_changes(base.clone(), changes, now, idle_deadline)
                    .ok()
                    .filter(|x| {
                        x.version == applied.version && x.idle_deadline == applied.idle_deadline
                    })
                    .map_or(Keep::Nothing, Keep::Written)
            }
            _ => Keep::Nothing,
        };
        match next {
            Keep::Cached => {}
            Keep::Written(record) => {
                self.counters
                    .written_through
                    .fetch_add(1, Ordering::Relaxed);
                s.records.insert(*id, record);
            }
            Keep::Nothing => {
                s.records.remove(id);
            }
        }
        // A read that began before this commit may hold the state before it: refused by
        // its version from now on (a floor only rises).
        if s.floors.len() >= self.capacity && !s.floors.contains_key(id) {
            s.floors.clear();
            s.generation = s.generation.wrapping_add(1);
        }
        let floor = s.floors.entry(*id).or_insert(0);
        *floor = (*floor).max(applied.version);
    }

    #[cfg(test)]
    fn ticket(&self) -> Ticket {
        let s = self.lock();
        Ticket(s.online.then_some(s.generation))
    }

    fn fill(&self, ticket: Ticket, fill: impl FnOnce(&mut State, usize)) {
        let mut s = self.lock();
        if s.online && ticket.0 == Some(s.generation) {
            fill(&mut s, self.capacity);
        }
    }

    /// A record read from the store fills the cache (within [`Cache::fill`]) unless this
    /// process has committed it since past that version, or a newer version is cached.
    fn fill_record(s: &mut State, capacity: usize, record: Record) {
        let id = record.id_hash;
        if s.floors
            .get(&id)
            .is_some_and(|floor| record.version < *floor)
            || s.records
                .get(&id)
                .is_some_and(|r| r.version > record.version)
        {
            return;
        }
        Cache::insert_record(s, capacity, record);
    }

    fn insert_record(s: &mut State, capacity: usize, record: Record) {
        if s.records.len() >= capacity && !s.records.contains_key(&record.id_hash) {
            // Full: drop an arbitrary entry (the map's first), O(1) on average.
            if let Some(k) = s.records.keys().next().copied() {
                s.records.remove(&k);
            }
        }
        s.records.insert(record.id_hash, record);
    }

    fn insert_epoch(s: &mut State, capacity: usize, user: &str, epoch: u64) {
        if s.epochs.len() >= capacity && !s.epochs.contains_key(user) {
            if let Some(k) = s.epochs.keys().next().cloned() {
                s.epochs.remove(&k);
            }
        }
        s.epochs.insert(user.to_owned(), epoch);
    }

    fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            bypassed: c.bypassed.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            written_through: c.written_through.load(Ordering::Relaxed),
        }
    }
}

/// What [`Cache::commit_through`] does with a session's cached record.
enum Keep {
    /// Keep it: it is already at or past the commit's version.
    Cached,
    /// Replace it with the commit's result.
    Written(Record),
    /// Evict it.
    Nothing,
}

/// Whether a channel did an operation itself, or left it to the store.
pub(crate) enum Via<T> {
    /// Done on the channel's own connection.
    Channel(T),
    /// Not done: ask the store (the channel is down, or cannot do this one).
    Store,
}

/// How a channel keeps a [`Cache`] fresh.
#[async_trait]
pub(crate) trait Channel: Send + Sync + 'static {
    /// Called before every hit and after every store read, on the caller's task: whether
    /// this operation may use the cache (hit or fill). A polled channel (SQLite) answers
    /// from its watcher's last answer, or checks here (invalidating or going offline) when
    /// that answer is too old, and says no when it cannot tell without waiting; a pushed one
    /// (Redis, PostgreSQL) has a task of its own and always says yes here (the cache's
    /// `online` flag tells whether that task is connected).
    fn check(&self, _cache: &Cache) -> bool {
        true
    }

    /// Whether the channel hears only of changes to what it read itself (Redis tracking):
    /// then loads and epoch reads go through [`Channel::load`] and [`Channel::user_epoch`],
    /// and only what they read may fill the cache.
    fn reads_itself(&self) -> bool {
        false
    }

    /// Whether [`Channel::apply`] commits without the channel echoing the commit back, so
    /// its result may be written through.
    fn writes_through(&self) -> bool {
        false
    }

    async fn load(&self, _id: &IdHash, _now: u64) -> Via<Result<Option<Record>, Error>> {
        Via::Store
    }

    async fn user_epoch(&self, _user: &str) -> Via<Result<u64, Error>> {
        Via::Store
    }

    async fn apply(
        &self,
        _id: &IdHash,
        _changes: &Changes,
        _now: u64,
        _idle_deadline: u64,
    ) -> Via<Result<Applied, Error>> {
        Via::Store
    }
}

/// No invalidation at all: the cache trusts itself forever. Only for the tests that show
/// the revocation test fails without a channel.
struct Blind;

impl Channel for Blind {}

/// Aborts the channel's background task when the store is dropped.
struct Task(Option<tokio::task::JoinHandle<()>>);

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// A [`Store`] with a bounded in-process cache of recently loaded records and user epochs in
/// front of the store `S`, coherent with every other writer of the store through the
/// backend's invalidation channel (see the module documentation for the rules).
///
/// Made by [`CachedStore::sqlite`], [`CachedStore::redis`] or [`CachedStore::postgres`]
/// (each behind its store's feature), or by [`open_cached`](crate::open_cached) from a store
/// URL.
///
/// # Example
///
/// ```
/// use cloakroom::{Policy, Record, SessionId, Store};
/// use cloakroom_stores::{CachedStore, SqliteStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStore::open(dir.path().join("sessions.db")).await?;
/// let cached = CachedStore::sqlite(store, 10_000).await?;
/// let record = Record::new(SessionId::generate()?.hash(), 1_700_000_000, &Policy::default());
/// cached.create(&record, record.last_seen).await?;
/// assert!(cached.load(&record.id_hash, 1_700_000_001).await?.is_some()); // from SQLite
/// assert!(cached.load(&record.id_hash, 1_700_000_001).await?.is_some()); // from memory
/// assert_eq!(cached.cache_stats().hits, 1);
/// # Ok::<(), cloakroom::Error>(())
/// # }).unwrap();
/// ```
pub struct CachedStore<S> {
    store: S,
    cache: Arc<Cache>,
    channel: Arc<dyn Channel>,
    _task: Task,
}

impl<S: fmt::Debug> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("store", &self.store)
            .field("capacity", &self.cache.capacity)
            .field("stats", &self.cache.stats())
            .finish_non_exhaustive()
    }
}

fn check_capacity(capacity: usize) -> Result<(), Error> {
    if capacity == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a session cache of 0 entries (leave the cache off instead)",
        ));
    }
    Ok(())
}

impl<S: Store> CachedStore<S> {
    fn with_channel(
        store: S,
        cache: Arc<Cache>,
        channel: Arc<dyn Channel>,
        task: Option<tokio::task::JoinHandle<()>>,
    ) -> Self {
        Self {
            store,
            cache,
            channel,
            _task: Task(task),
        }
    }

    /// A cache with NO invalidation: it serves what it cached until this process writes.
    /// Wrong whenever another process writes the store; it exists for the tests that show
    /// the revocation test catches a cache without a channel.
    #[doc(hidden)]
    pub fn without_invalidation_for_tests(store: S, capacity: usize) -> Result<Self, Error> {
        check_capacity(capacity)?;
        let cache = Arc::new(Cache::new(capacity));
        cache.online();
        Ok(Self::with_channel(store, cache, Arc::new(Blind), None))
    }

    /// The store behind the cache.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// What the cache has done so far.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Whether the invalidation channel is up (the cache is in use); while it is down every
    /// read goes to the store.
    pub fn is_online(&self) -> bool {
        let _ = self.channel.check(&self.cache);
        self.cache.is_online()
    }

    /// Records cached now.
    pub fn len(&self) -> usize {
        self.cache.lock().records.len()
    }

    /// Whether no record is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget(&self, id: &IdHash) {
        self.cache.wrote(|s| {
            s.records.remove(id);
        })
    }
}

#[async_trait]
impl<S: Store> Store for CachedStore<S> {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        self.forget(&record.id_hash);
        let r = self.store.create(record, now).await;
        self.forget(&record.id_hash);
        r
    }

    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        let trusted = self.channel.check(&self.cache);
        let ticket = {
            let s = self.cache.lock();
            if s.online && trusted {
                if let Some(r) = s.records.get(id) {
                    self.cache.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(r.is_live(now).then(|| r.clone()));
                }
                self.cache.counters.misses.fetch_add(1, Ordering::Relaxed);
            } else {
                self.cache.counters.bypassed.fetch_add(1, Ordering::Relaxed);
            }
            Ticket((s.online && trusted).then_some(s.generation))
        };
        let (r, may_fill) = if self.channel.reads_itself() {
            match self.channel.load(id, now).await {
                Via::Channel(r) => (r?, true),
                Via::Store => (self.store.load(id, now).await?, false),
            }
        } else {
            (self.store.load(id, now).await?, true)
        };
        // A polled channel must see whether the read raced another process's write.
        if let Some(record) = r
            .as_ref()
            .filter(|_| may_fill && self.channel.check(&self.cache))
        {
            self.cache.fill(ticket, |s, cap| {
                Cache::fill_record(s, cap, record.clone());
            });
        }
        Ok(r)
    }

    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        self.forget(&record.id_hash);
        let r = self.store.update(record, now).await;
        self.forget(&record.id_hash);
        r
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        if !self.channel.writes_through() {
            self.forget(id);
            let r = self.store.apply(id, changes, now, idle_deadline).await;
            self.forget(id);
            return r;
        }
        match self.channel.apply(id, changes, now, idle_deadline).await {
            Via::Channel(Ok(applied)) => {
                self.cache
                    .commit_through(id, &applied, changes, now, idle_deadline);
                Ok(applied)
            }
            Via::Channel(Err(e)) => {
                self.forget(id);
                Err(e)
            }
            // The channel is down (the cache with it): commit on the store.
            Via::Store => {
                self.forget(id);
                let r = self.store.apply(id, changes, now, idle_deadline).await;
                self.forget(id);
                r
            }
        }
    }

    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        self.forget(id);
        let r = self.store.touch(id, now, idle_deadline).await;
        self.forget(id);
        r
    }

    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        self.forget(id);
        let r = self.store.delete(id).await;
        self.forget(id);
        r
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.store.sessions_of(user, now).await
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        let drop_user = |s: &mut State| {
            s.records
                .retain(|k, r| r.user_id.as_deref() != Some(user) || Some(k) == except);
        };
        let drop_user = |s: &mut State| {
            drop_user(s);
        };
        self.cache.wrote(drop_user);
        let r = self.store.revoke_user_sessions(user, except).await;
        self.cache.wrote(drop_user);
        r
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let trusted = self.channel.check(&self.cache);
        let ticket = {
            let s = self.cache.lock();
            if s.online && trusted {
                if let Some(epoch) = s.epochs.get(user) {
                    self.cache.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(*epoch);
                }
                self.cache.counters.misses.fetch_add(1, Ordering::Relaxed);
            } else {
                self.cache.counters.bypassed.fetch_add(1, Ordering::Relaxed);
            }
            Ticket((s.online && trusted).then_some(s.generation))
        };
        let (epoch, may_fill) = if self.channel.reads_itself() {
            match self.channel.user_epoch(user).await {
                Via::Channel(r) => (r?, true),
                Via::Store => (self.store.user_epoch(user).await?, false),
            }
        } else {
            (self.store.user_epoch(user).await?, true)
        };
        if may_fill && self.channel.check(&self.cache) {
            self.cache
                .fill(ticket, |s, cap| Cache::insert_epoch(s, cap, user, epoch));
        }
        Ok(epoch)
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let drop_user = |s: &mut State| {
            s.epochs.remove(user);
        };
        self.cache.wrote(drop_user);
        let r = self.store.bump_user_epoch(user).await;
        self.cache.wrote(drop_user);
        r
    }

    // Operator queries read the store itself (the cache holds only what was loaded).
    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.store.find_by_prefix(prefix, now).await
    }
    async fn stats(&self, now: u64) -> Result<cloakroom::Stats, Error> {
        self.store.stats(now).await
    }
    fn store_name(&self) -> &'static str {
        self.store.store_name()
    }
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let r = self.store.purge_expired(now, limit).await;
        self.cache.wrote(|s| {
            s.records.retain(|_, r| r.is_live(now));
        });
        r
    }
}

#[cfg(test)]
mod tests;
