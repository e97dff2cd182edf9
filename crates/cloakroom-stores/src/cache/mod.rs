//! Reads without a round trip: [`CachedStore`], a bounded in-process cache of recently
//! loaded session records and user epochs in front of any store, kept coherent with every
//! writer of the store (other processes, other machines, the operator CLI) by the backend's
//! own invalidation channel. One file per channel:
//!
//! | store | channel | file |
//! |---|---|---|
//! | SQLite | `PRAGMA data_version`, read on a connection of the cache's own before a hit or a fill when the last answer is older than 1 ms or this process has written since; any change by any connection drops the whole cache | `sqlite.rs` |
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
//!   counter), so a slow answer never brings back what an invalidation already removed.
//! - Every write of this process evicts the record (or user) before and after it, except a
//!   commit ([`Store::apply`]) written through by a channel that does not echo it (Redis):
//!   the record leaves the cache when the commit starts, and the committed record (the
//!   cached one with the changes applied here, checked against the version and idle
//!   deadline the store returned) enters it only if nothing invalidated or wrote that record
//!   in this process while the commit ran (its entry in `pending`) and the channel stayed
//!   up. Any other writer's change after the commit is still pushed and evicts it.
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
//! On SQLite and PostgreSQL, writes by this process also come back through the channel
//! (those backends do not tell one process's writes from another's), so a record written
//! here is read once from the store after its write. On Redis a commit of a cached session
//! is written through, so a request that loads and commits costs one store round trip.

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
    /// Commits that may write through, by record: the number of the one in flight. Any
    /// invalidation of the record, any other write of it by this process (a second commit
    /// included) and any drop of the whole cache removes the entry, and then the commit
    /// evicts instead.
    pending: HashMap<IdHash, u64>,
    /// The number of the next commit that may write through.
    next_commit: u64,
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
                pending: HashMap::new(),
                next_commit: 0,
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
        s.pending.clear();
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
        s.pending.clear();
        s.generation = s.generation.wrapping_add(1);
        s.online = false;
    }

    pub(crate) fn is_online(&self) -> bool {
        self.lock().online
    }

    /// The generation: it moves with every write of this process, every invalidation and
    /// every change of the channel's state, never with a hit or a fill.
    #[cfg(feature = "sqlite")]
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Something changed, we do not know what: drop everything.
    pub(crate) fn invalidate_all(&self) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        s.records.clear();
        s.epochs.clear();
        s.pending.clear();
        s.generation = s.generation.wrapping_add(1);
    }

    /// The record `id` changed.
    pub(crate) fn invalidate_record(&self, id: &IdHash) {
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        s.records.remove(id);
        s.pending.remove(id);
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

    /// A commit of `id` starts: the record leaves the cache (as for every write), and if
    /// `through` (the channel can commit without echoing it back), the cache is online,
    /// the record was cached and no other commit of it is in flight, the commit may write
    /// through: its number and the record it starts from are returned. A commit already in
    /// flight for `id` loses its right to write through either way.
    fn begin_commit(&self, id: &IdHash, through: bool) -> Option<(u64, Record)> {
        let mut s = self.lock();
        let base = s.records.remove(id);
        let other = s.pending.remove(id).is_some();
        s.generation = s.generation.wrapping_add(1);
        let base = base.filter(|_| through && s.online && !other)?;
        let n = s.next_commit;
        s.next_commit = n.wrapping_add(1);
        s.pending.insert(*id, n);
        Some((n, base))
    }

    /// A commit of `id` ended: `record` (what it wrote, if it may write through) enters the
    /// cache only if the commit numbered `n` still owns `id`'s entry (nothing invalidated or
    /// wrote `id` meanwhile, no other commit of it began or ended) and the channel is up;
    /// otherwise the record is evicted.
    fn end_commit(&self, id: &IdHash, n: Option<u64>, record: Option<Record>) {
        let mut s = self.lock();
        // Any commit's end ends every other's right to write `id` through.
        let ours = s.pending.remove(id).is_some_and(|p| Some(p) == n);
        match record {
            Some(record) if ours && s.online => {
                self.counters
                    .written_through
                    .fetch_add(1, Ordering::Relaxed);
                Cache::insert_record(&mut s, self.capacity, record);
            }
            _ => {
                s.records.remove(id);
            }
        }
        s.generation = s.generation.wrapping_add(1);
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
    /// Called before every hit and after every store read, on the caller's task: a polled
    /// channel (SQLite) checks here and invalidates or goes offline; a pushed one (Redis,
    /// PostgreSQL) has a task of its own and does nothing here.
    fn check(&self, _cache: &Cache) {}

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
        self.channel.check(&self.cache);
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
            s.pending.remove(id);
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
        self.channel.check(&self.cache);
        let ticket = {
            let s = self.cache.lock();
            if s.online {
                if let Some(r) = s.records.get(id) {
                    self.cache.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(r.is_live(now).then(|| r.clone()));
                }
                self.cache.counters.misses.fetch_add(1, Ordering::Relaxed);
            } else {
                self.cache.counters.bypassed.fetch_add(1, Ordering::Relaxed);
            }
            Ticket(s.online.then_some(s.generation))
        };
        let (r, may_fill) = if self.channel.reads_itself() {
            match self.channel.load(id, now).await {
                Via::Channel(r) => (r?, true),
                Via::Store => (self.store.load(id, now).await?, false),
            }
        } else {
            (self.store.load(id, now).await?, true)
        };
        if let Some(record) = r.as_ref().filter(|_| may_fill) {
            // A polled channel must see whether the read raced another process's write.
            self.channel.check(&self.cache);
            self.cache.fill(ticket, |s, cap| {
                Cache::insert_record(s, cap, record.clone());
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
        let through = self.cache.begin_commit(id, self.channel.writes_through());
        let Some((n, base)) = through else {
            let r = self.store.apply(id, changes, now, idle_deadline).await;
            self.cache.end_commit(id, None, None);
            return r;
        };
        let (r, written) = match self.channel.apply(id, changes, now, idle_deadline).await {
            Via::Channel(r) => (r, true),
            Via::Store => (
                self.store.apply(id, changes, now, idle_deadline).await,
                false,
            ),
        };
        // What the store now holds, if the commit was the only change since `base`: the
        // same changes applied here, checked against the version and deadline it returned.
        let record = match &r {
            Ok(applied) if written => cloakroom::apply_changes(base, changes, now, idle_deadline)
                .ok()
                .filter(|x| {
                    x.version == applied.version && x.idle_deadline == applied.idle_deadline
                }),
            _ => None,
        };
        self.cache.end_commit(id, Some(n), record);
        r
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
            s.pending.clear();
        };
        self.cache.wrote(drop_user);
        let r = self.store.revoke_user_sessions(user, except).await;
        self.cache.wrote(drop_user);
        r
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.channel.check(&self.cache);
        let ticket = {
            let s = self.cache.lock();
            if s.online {
                if let Some(epoch) = s.epochs.get(user) {
                    self.cache.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(*epoch);
                }
                self.cache.counters.misses.fetch_add(1, Ordering::Relaxed);
            } else {
                self.cache.counters.bypassed.fetch_add(1, Ordering::Relaxed);
            }
            Ticket(s.online.then_some(s.generation))
        };
        let (epoch, may_fill) = if self.channel.reads_itself() {
            match self.channel.user_epoch(user).await {
                Via::Channel(r) => (r?, true),
                Via::Store => (self.store.user_epoch(user).await?, false),
            }
        } else {
            (self.store.user_epoch(user).await?, true)
        };
        self.channel.check(&self.cache);
        if may_fill {
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
            s.pending.clear();
        });
        r
    }
}

#[cfg(test)]
mod tests;
