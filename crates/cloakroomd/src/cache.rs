//! A bounded cache of live sessions in front of the store.
//!
//! Coherent for one daemon by construction: every write of this daemon goes through
//! [`CachedStore`], which updates or drops the cached record after the store has taken the
//! write. Reads that raced a write never fill the cache with what they read (a write
//! counter taken before the read must be unchanged after it). Other writers of the same
//! store (another daemon) are not seen: the daemon turns the cache off for network stores
//! unless told otherwise (docs/daemon.md).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{apply_changes, Applied, Changes, IdHash, Record, Store};
use parking_lot_free::Mutex;

use crate::metrics::Metrics;

/// A std mutex that ignores poisoning (nothing here can be left half-changed by a panic).
mod parking_lot_free {
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub(crate) fn new(t: T) -> Self {
            Self(std::sync::Mutex::new(t))
        }
        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

struct Inner {
    records: HashMap<IdHash, Record>,
    /// Bumped by every write: a read fills the cache only if no write happened meanwhile.
    writes: u64,
}

/// A [`Store`] that keeps up to `capacity` live records in memory in front of another
/// store. Loads of a cached live record cost no store round trip; every write goes to the
/// store first and then updates or evicts the cached copy.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    capacity: usize,
    cache: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("capacity", &self.capacity)
            .field("cached", &self.len())
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    /// A cache of at most `capacity` records in front of `inner`, counting hits in
    /// `metrics`.
    pub fn new(inner: Arc<dyn Store>, capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            capacity,
            cache: Mutex::new(Inner {
                records: HashMap::new(),
                writes: 0,
            }),
            metrics,
        }
    }

    /// Records cached now.
    pub fn len(&self) -> usize {
        self.cache.lock().records.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(inner: &mut Inner, capacity: usize, record: Record) {
        if inner.records.len() >= capacity && !inner.records.contains_key(&record.id_hash) {
            // Full: drop an arbitrary entry (the hash map's first), O(1) on average.
            if let Some(k) = inner.records.keys().next().copied() {
                inner.records.remove(&k);
            }
        }
        inner.records.insert(record.id_hash, record);
    }

    /// After a write: bump the counter and change the cached copy.
    fn wrote(&self, change: impl FnOnce(&mut Inner)) {
        let mut inner = self.cache.lock();
        inner.writes = inner.writes.wrapping_add(1);
        change(&mut inner);
    }

    fn failed(&self, e: &Error) {
        if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Corrupt) {
            self.metrics.store_error();
        }
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let r = self.inner.create(record, now).await;
        match &r {
            Ok(()) => {
                let cap = self.capacity;
                self.wrote(|i| Self::insert(i, cap, record.clone()));
            }
            Err(e) => {
                self.failed(e);
                // A failed create may have replaced an expired record: forget it.
                self.wrote(|i| {
                    i.records.remove(&record.id_hash);
                });
            }
        }
        r
    }

    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        let writes = {
            let inner = self.cache.lock();
            if let Some(r) = inner.records.get(id) {
                self.metrics.cache_hit();
                return Ok(r.is_live(now).then(|| r.clone()));
            }
            inner.writes
        };
        self.metrics.cache_miss();
        let r = self.inner.load(id, now).await;
        match &r {
            Ok(Some(record)) => {
                let mut inner = self.cache.lock();
                if inner.writes == writes {
                    Self::insert(&mut inner, self.capacity, record.clone());
                }
            }
            Ok(None) => {}
            Err(e) => self.failed(e),
        }
        r
    }

    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        let r = self.inner.update(record, now).await;
        match &r {
            Ok(version) => {
                let mut stored = record.clone();
                stored.version = *version;
                let cap = self.capacity;
                self.wrote(|i| Self::insert(i, cap, stored));
            }
            Err(e) => {
                self.failed(e);
                self.wrote(|i| {
                    i.records.remove(&record.id_hash);
                });
            }
        }
        r
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let r = self.inner.apply(id, changes, now, idle_deadline).await;
        match &r {
            Ok(applied) => self.wrote(|i| {
                // The store did to its record what apply_changes does; do the same to ours if
                // it is the version the store started from, else forget ours.
                let next = i
                    .records
                    .remove(id)
                    .filter(|c| c.version.checked_add(1) == Some(applied.version))
                    .and_then(|c| apply_changes(c, changes, now, idle_deadline).ok())
                    .filter(|c| c.idle_deadline == applied.idle_deadline);
                if let Some(next) = next {
                    i.records.insert(*id, next);
                }
            }),
            Err(e) => {
                self.failed(e);
                self.wrote(|i| {
                    i.records.remove(id);
                });
            }
        }
        r
    }

    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        let r = self.inner.touch(id, now, idle_deadline).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        self.wrote(|i| match (&r, i.records.get_mut(id)) {
            (Ok(()), Some(c)) => {
                c.last_seen = now;
                c.idle_deadline = idle_deadline.min(c.absolute_deadline);
            }
            _ => {
                i.records.remove(id);
            }
        });
        r
    }

    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        let r = self.inner.delete(id).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        // Even a failed delete may have deleted: forget it either way.
        self.wrote(|i| {
            i.records.remove(id);
        });
        r
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let r = self.inner.sessions_of(user, now).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        let r = self.inner.revoke_user_sessions(user, except).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        self.wrote(|i| {
            i.records
                .retain(|k, rec| rec.user_id.as_deref() != Some(user) || Some(k) == except);
        });
        r
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let r = self.inner.user_epoch(user).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let r = self.inner.bump_user_epoch(user).await;
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let r = self.inner.purge_expired(now, limit).await;
        match &r {
            Ok(_) => self.wrote(|i| i.records.retain(|_, rec| rec.is_live(now))),
            Err(e) => self.failed(e),
        }
        r
    }
    // Operator queries read the store itself (the cache holds only what was loaded).
    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.inner.find_by_prefix(prefix, now).await
    }
    async fn stats(&self, now: u64) -> Result<cloakroom::Stats, Error> {
        self.inner.stats(now).await
    }
    fn store_name(&self) -> &'static str {
        self.inner.store_name()
    }
}

/// Counts store errors of a store without a cache (cache size 0).
pub(crate) struct Counted {
    pub(crate) inner: Arc<dyn Store>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Counted {
    fn check<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &r {
            if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Corrupt) {
                self.metrics.store_error();
            }
        }
        r
    }
}

#[async_trait]
impl Store for Counted {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        self.check(self.inner.create(record, now).await)
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        self.metrics.cache_miss();
        self.check(self.inner.load(id, now).await)
    }
    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        self.check(self.inner.update(record, now).await)
    }
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        self.check(self.inner.apply(id, changes, now, idle_deadline).await)
    }
    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        self.check(self.inner.touch(id, now, idle_deadline).await)
    }
    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        self.check(self.inner.delete(id).await)
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.check(self.inner.sessions_of(user, now).await)
    }
    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        self.check(self.inner.revoke_user_sessions(user, except).await)
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.check(self.inner.user_epoch(user).await)
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.check(self.inner.bump_user_epoch(user).await)
    }
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        self.check(self.inner.purge_expired(now, limit).await)
    }
    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.check(self.inner.find_by_prefix(prefix, now).await)
    }
    async fn stats(&self, now: u64) -> Result<cloakroom::Stats, Error> {
        self.check(self.inner.stats(now).await)
    }
    fn store_name(&self) -> &'static str {
        self.inner.store_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom::{MemoryStore, Policy, SessionId, Value};

    #[tokio::test]
    async fn the_cache_follows_every_write() {
        let metrics = Arc::new(Metrics::new());
        let store = CachedStore::new(Arc::new(MemoryStore::new()), 2, metrics.clone());
        let now = 1_700_000_000;
        let id = SessionId::generate().unwrap().hash();
        let mut r = Record::new(id, now, &Policy::default());
        r.user_id = Some("u".into());
        store.create(&r, r.last_seen).await.unwrap();
        assert_eq!(store.load(&id, now).await.unwrap().unwrap().version, 1);
        assert_eq!(metrics.cache_hits(), 1);
        let mut c = Changes::new();
        c.set("k", Value::from(1));
        let applied = store.apply(&id, &c, now + 1, now + 100).await.unwrap();
        let cached = store.load(&id, now + 1).await.unwrap().unwrap();
        assert_eq!(cached.version, applied.version);
        assert_eq!(cached.data.get("k"), Some(&Value::from(1)));
        assert_eq!(metrics.cache_hits(), 2);
        store.revoke_user_sessions("u", None).await.unwrap();
        assert!(store.load(&id, now + 1).await.unwrap().is_none());
        // Bounded.
        for _ in 0..5 {
            let id = SessionId::generate().unwrap().hash();
            store
                .create(&Record::new(id, now, &Policy::default()), now)
                .await
                .unwrap();
        }
        assert!(store.len() <= 2);
    }
}
