//! The SQLite channel: `PRAGMA data_version` on a connection of the cache's own.
//!
//! SQLite answers `PRAGMA data_version` with a number that changes whenever another
//! connection (of this process or any other: a second application process, the operator
//! CLI) committed to the file since this connection last asked. It does not say what
//! changed, so a change drops the whole cache, unless it was this store's own commits: the
//! store's writer connection asks `data_version` too, and its answer moves for every commit
//! but its own, so when it has not moved since the last change, no other connection wrote
//! (this store's own writes evicted their records or wrote them through already). Asking
//! costs a read transaction on the WAL index in shared memory (two `fcntl` locks, no disk
//! read): a few microseconds.
//!
//! A watcher thread of the cache's own asks every half [`RECHECK`] while the cache is in use
//! (every [`IDLE_RECHECK`] when no request asked it for a while), so a request's hit costs
//! two atomic loads, not a SQLite read, and never waits for one. A hit trusts the last
//! answer while it is under [`RECHECK`] (1 ms) old; an older one (the watcher was not
//! scheduled in time, or the cache was idle) is asked again by the request itself before
//! it is served. So a write committed anywhere is served stale for at most 1 ms after its
//! commit, inside the 10 ms the two-process revocation test holds every store's cache to: a
//! check after the commit drops the whole cache, and a read that began before that check
//! cannot fill it (the cache's generation ticket). This process's own writes are never
//! served stale: each one evicts its record itself. The interval is measured with the
//! monotonic clock; the sessions' own time (`now`) is still only what the caller passes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cloakroom::store::{Error, ErrorKind};
use rusqlite::{Connection, OpenFlags};

use async_trait::async_trait;
use cloakroom::{Applied, Changes, IdHash, Store};

use super::{Cache, CachedStore, Channel, Via};
use crate::SqliteStore;

/// How long an answer of `PRAGMA data_version` is trusted before it is asked again.
pub(super) const RECHECK: Duration = Duration::from_millis(1);

/// How often the watcher asks when no request has asked for [`IDLE_AFTER`].
const IDLE_RECHECK: Duration = Duration::from_millis(50);

/// How long without a request before the watcher slows down to [`IDLE_RECHECK`].
const IDLE_AFTER: Duration = Duration::from_millis(100);

struct Watch {
    conn: Option<Connection>,
    seen: i64,
}

pub(super) struct DataVersion {
    path: PathBuf,
    /// The store the cache is in front of: its writer tells its own commits from others'.
    store: SqliteStore,
    watch: Mutex<Watch>,
    /// The instant the two clocks below count from.
    base: Instant,
    /// When `data_version` last answered and was acted on, in nanoseconds since `base`;
    /// 0 until it has and after every failure.
    answered: AtomicU64,
    /// When a request last asked for a check, in nanoseconds since `base`.
    used: AtomicU64,
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn data_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

impl DataVersion {
    fn clock(&self) -> u64 {
        // Never 0, which means "no answer"; u64 nanoseconds last 584 years.
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn fresh(&self, within: Duration) -> bool {
        let at = self.answered.load(Ordering::Acquire);
        at != 0 && self.clock().saturating_sub(at) < within.as_nanos() as u64
    }

    /// Asks `data_version` now (unless another caller got an answer within `within` while
    /// this one waited for the connection) and acts on the answer: on a change, drop the
    /// cache unless the store's writer says no other connection committed (then the change
    /// is this store's own commits, whose records were evicted or written through already);
    /// go offline on a failure, online again on the first answer after one. With `wait`
    /// false (a request's own check) it waits neither for another check in progress nor for
    /// the store's writer: it returns false at once for the first, and drops the cache
    /// rather than wait for the second.
    fn ask(&self, cache: &Cache, within: Duration, wait: bool) -> bool {
        let mut watch = if wait {
            self.watch.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.watch.try_lock() {
                Ok(watch) => watch,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return false,
            }
        };
        if self.fresh(within) {
            return true;
        }
        if watch.conn.is_none() {
            match open(&self.path) {
                Ok(conn) => watch.conn = Some(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "session cache: cannot open the SQLite file to watch it; bypassing the cache");
                    cache.offline();
                    return false;
                }
            }
        }
        let Some(conn) = &watch.conn else {
            return false;
        };
        match data_version(conn) {
            Ok(version) if !cache.is_online() => {
                watch.seen = version;
                // From here on, the writer's answer is measured from now.
                let _ = self.store.others_committed(wait);
                cache.online();
            }
            Ok(version) if version != watch.seen => {
                watch.seen = version;
                if self.store.others_committed(wait) != Some(false) {
                    cache.invalidate_all();
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "session cache: PRAGMA data_version failed; bypassing the cache until it answers");
                watch.conn = None;
                self.answered.store(0, Ordering::Release);
                cache.offline();
                return false;
            }
        }
        // Stored after the answer was acted on: a hit that trusts it sees its effect.
        self.answered.store(self.clock(), Ordering::Release);
        true
    }

    /// The watcher thread: asks every half [`RECHECK`] while requests use the cache, every
    /// [`IDLE_RECHECK`] otherwise; ends when the cache is dropped.
    fn watch(channel: Weak<Self>, cache: Weak<Cache>) {
        loop {
            let pause = match channel.upgrade() {
                Some(ch)
                    if ch.clock().saturating_sub(ch.used.load(Ordering::Relaxed))
                        < IDLE_AFTER.as_nanos() as u64 =>
                {
                    RECHECK / 2
                }
                Some(_) => IDLE_RECHECK,
                None => return,
            };
            std::thread::sleep(pause);
            let (Some(channel), Some(cache)) = (channel.upgrade(), cache.upgrade()) else {
                return;
            };
            // Asked again unless a request asked within the last quarter interval.
            channel.ask(&cache, RECHECK / 4, true);
        }
    }
}

#[async_trait]
impl Channel for DataVersion {
    fn check(&self, cache: &Cache) -> bool {
        self.used.store(self.clock(), Ordering::Relaxed);
        // `answered` is 0 after every failure, so an offline cache always asks.
        self.fresh(RECHECK) || self.ask(cache, RECHECK, false)
    }

    fn writes_through(&self) -> bool {
        // This store's own commits do not drop the cache (`ask`), so their results can be
        // written through.
        true
    }

    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Via<Result<Applied, Error>> {
        Via::Channel(self.store.apply(id, changes, now, idle_deadline).await)
    }
}

impl CachedStore<SqliteStore> {
    /// A cache of up to `capacity` records (and as many user epochs) in front of `store`,
    /// kept coherent with every other connection to its file by `PRAGMA data_version`
    /// (module documentation of [`CachedStore`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a capacity of 0; [`ErrorKind::Unavailable`] if the
    /// file cannot be opened a second time to watch it.
    pub async fn sqlite(store: SqliteStore, capacity: usize) -> Result<Self, Error> {
        super::check_capacity(capacity)?;
        let path = store.path().to_path_buf();
        let conn = {
            let at = path.clone();
            tokio::task::spawn_blocking(move || open(&at))
                .await
                .map_err(|e| Error::unavailable("a SQLite cache worker thread failed", e))?
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "session cache: cannot open {} to watch it: {e}",
                            path.display()
                        ),
                    )
                    .with_source(e)
                })?
        };
        let cache = Arc::new(Cache::new(capacity));
        let channel = Arc::new(DataVersion {
            path,
            store: store.clone(),
            watch: Mutex::new(Watch {
                conn: Some(conn),
                seen: 0,
            }),
            base: Instant::now(),
            answered: AtomicU64::new(0),
            used: AtomicU64::new(0),
        });
        {
            let (channel, cache) = (Arc::clone(&channel), Arc::clone(&cache));
            tokio::task::spawn_blocking(move || channel.ask(&cache, RECHECK, true))
                .await
                .map_err(|e| Error::unavailable("a SQLite cache worker thread failed", e))?;
        }
        let (weak_channel, weak_cache) = (Arc::downgrade(&channel), Arc::downgrade(&cache));
        std::thread::Builder::new()
            .name("cloakroom-sqlite-cache-watch".into())
            .spawn(move || DataVersion::watch(weak_channel, weak_cache))
            .map_err(|e| Error::unavailable("cannot start the SQLite cache's watcher thread", e))?;
        Ok(Self::with_channel(store, cache, channel, None))
    }
}
