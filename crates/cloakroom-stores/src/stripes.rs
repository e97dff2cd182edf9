//! In-process turns for writes to one record, for the stores whose backend cannot merge a
//! commit in one atomic step without holding something across round trips (PostgreSQL's row
//! lock, memcached's `gets`/`cas` loop).
//!
//! Overlapping commits of one session in this process wait here, in FIFO order, instead of
//! all holding a pooled connection while they wait for the row lock (PostgreSQL) or all
//! losing `cas` rounds to each other (memcached). Writers in other processes are still
//! ordered by the backend itself; this only keeps the contention inside one process from
//! reaching it.

use cloakroom::IdHash;
use tokio::sync::{Mutex, MutexGuard};

/// One async mutex per value of an id hash's first byte: two sessions share one with
/// probability 1/256, and then only take turns.
pub(crate) struct Stripes {
    locks: Box<[Mutex<()>]>,
}

impl Stripes {
    pub(crate) fn new() -> Self {
        Self {
            locks: (0..256).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Waits for the turn of `id`'s stripe; the turn lasts until the guard is dropped.
    pub(crate) async fn turn(&self, id: &IdHash) -> MutexGuard<'_, ()> {
        self.locks[usize::from(id.as_bytes()[0])].lock().await
    }
}
