//! The in-process store.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::id::IdHash;
use crate::record::Record;
use crate::store::{check_id_prefix, Applied, Changes, Stats, Store};
use crate::store::{Error, ErrorKind};

/// A [`Store`] in process memory: for tests and single-process applications. Sessions do not
/// survive a restart and are not shared between processes.
///
/// Every operation takes one mutex for a few map operations and never awaits while holding
/// it.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    records: HashMap<IdHash, Slot>,
    by_user: HashMap<String, HashSet<IdHash>>,
    epochs: HashMap<String, u64>,
}

struct Slot {
    record: Record,
    /// Set only by the conformance hook: the record reads back as `Corrupt`.
    corrupt: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records it holds, expired ones included.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether it holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No operation panics half-way through a change, so a poisoned lock's state is
        // still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.len())
            .finish()
    }
}

impl Inner {
    fn live(&self, id: &IdHash, now: u64) -> Result<Option<&Slot>, Error> {
        match self.records.get(id) {
            Some(slot) if slot.record.is_live(now) => {
                if slot.corrupt {
                    return Err(Error::new(ErrorKind::Corrupt, "record does not decode"));
                }
                Ok(Some(slot))
            }
            _ => Ok(None),
        }
    }

    fn index(&mut self, user: Option<&str>, id: IdHash) {
        if let Some(user) = user {
            self.by_user.entry(user.to_owned()).or_default().insert(id);
        }
    }

    fn unindex(&mut self, user: Option<&str>, id: &IdHash) {
        if let Some(user) = user {
            if let Some(set) = self.by_user.get_mut(user) {
                set.remove(id);
                if set.is_empty() {
                    self.by_user.remove(user);
                }
            }
        }
    }

    fn remove(&mut self, id: &IdHash) -> bool {
        match self.records.remove(id) {
            Some(slot) => {
                self.unindex(slot.record.user_id.as_deref(), id);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let mut inner = self.lock();
        if let Some(old) = inner.records.get(&record.id_hash) {
            if old.record.is_live(now) || old.corrupt {
                return Err(Error::conflict());
            }
            inner.remove(&record.id_hash);
        }
        inner.index(record.user_id.as_deref(), record.id_hash);
        inner.records.insert(
            record.id_hash,
            Slot {
                record: record.clone(),
                corrupt: false,
            },
        );
        Ok(())
    }

    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        Ok(self.lock().live(id, now)?.map(|slot| slot.record.clone()))
    }

    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        let mut inner = self.lock();
        let Some(slot) = inner.live(&record.id_hash, now)? else {
            return Err(Error::not_found());
        };
        if slot.record.version != record.version {
            return Err(Error::conflict());
        }
        let old_user = slot.record.user_id.clone();
        let mut next = record.clone();
        next.version = record.version + 1;
        let version = next.version;
        if old_user != next.user_id {
            inner.unindex(old_user.as_deref(), &record.id_hash);
            inner.index(next.user_id.as_deref(), record.id_hash);
        }
        inner.records.insert(
            record.id_hash,
            Slot {
                record: next,
                corrupt: false,
            },
        );
        Ok(version)
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        // Read, merge and write under the one lock: no other operation sees a half-applied
        // change or slips in between.
        let mut inner = self.lock();
        if inner.live(id, now)?.is_none() {
            return Err(Error::not_found());
        }
        let Some(slot) = inner.records.get_mut(id) else {
            return Err(Error::not_found());
        };
        let record = &mut slot.record;
        let version = record
            .version
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "record version overflow"))?;
        changes.apply_to(&mut record.data);
        record.version = version;
        record.last_seen = record.last_seen.max(now);
        record.idle_deadline = record
            .idle_deadline
            .max(idle_deadline.min(record.absolute_deadline));
        Ok(Applied::new(version, record.idle_deadline))
    }

    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        let mut inner = self.lock();
        if inner.live(id, now)?.is_none() {
            return Err(Error::not_found());
        }
        if let Some(slot) = inner.records.get_mut(id) {
            slot.record.last_seen = now;
            slot.record.idle_deadline = idle_deadline.min(slot.record.absolute_deadline);
        }
        Ok(())
    }

    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        Ok(self.lock().remove(id))
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let inner = self.lock();
        let Some(ids) = inner.by_user.get(user) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(slot) = inner.live(id, now)? {
                out.push(slot.record.clone());
            }
        }
        Ok(out)
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        let mut inner = self.lock();
        let ids: Vec<IdHash> = inner
            .by_user
            .get(user)
            .map(|set| {
                set.iter()
                    .filter(|id| Some(*id) != except)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let mut count = 0;
        for id in &ids {
            if inner.remove(id) {
                count += 1;
            }
        }
        Ok(count)
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        Ok(self.lock().epochs.get(user).copied().unwrap_or(0))
    }

    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let mut inner = self.lock();
        let epoch = inner.epochs.entry(user.to_owned()).or_insert(0);
        *epoch += 1;
        Ok(*epoch)
    }

    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let mut inner = self.lock();
        let expired: Vec<IdHash> = inner
            .records
            .iter()
            .filter(|(_, slot)| !slot.record.is_live(now))
            .map(|(id, _)| *id)
            .take(limit)
            .collect();
        for id in &expired {
            inner.remove(id);
        }
        Ok(expired.len())
    }

    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        check_id_prefix(prefix)?;
        let inner = self.lock();
        Ok(inner
            .records
            .iter()
            .filter(|(id, slot)| {
                !slot.corrupt && slot.record.is_live(now) && id.to_hex().starts_with(prefix)
            })
            .map(|(_, slot)| slot.record.clone())
            .collect())
    }

    async fn stats(&self, now: u64) -> Result<Stats, Error> {
        let inner = self.lock();
        let live = inner
            .records
            .values()
            .filter(|slot| slot.record.is_live(now))
            .count() as u64;
        let expired = inner.records.len() as u64 - live;
        // The records are Rust values, not bytes: no size to tell.
        Ok(Stats::new(live, expired, None))
    }

    fn store_name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(feature = "testing")]
#[async_trait]
impl crate::conformance::ConformanceTarget for MemoryStore {
    async fn inject_corrupt(&self, id: &IdHash) -> Result<(), Error> {
        match self.lock().records.get_mut(id) {
            Some(slot) => {
                slot.corrupt = true;
                Ok(())
            }
            None => Err(Error::not_found()),
        }
    }
}
