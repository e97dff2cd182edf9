//! The SQLite channel: `PRAGMA data_version` on a connection of the cache's own.
//!
//! SQLite answers `PRAGMA data_version` with a number that changes whenever another
//! connection (of this process or any other: a second application process, the operator
//! CLI) committed to the file since this connection last asked. It does not say what
//! changed, so a change drops the whole cache. Asking costs a read transaction on the WAL
//! index in shared memory (two `fcntl` locks, no disk read): a few microseconds, which is most
//! of a hit's cost when it is asked before every hit. So it is asked at most once per
//! [`RECHECK`] (1 ms): a hit or a fill within 1 ms of the last answer trusts that answer. A
//! write committed anywhere is served stale for at most 1 ms after its commit, inside the
//! 10 ms the two-process revocation test holds every store's cache to: a check after the
//! commit drops the whole cache, and a read that began before that check cannot fill it (the
//! cache's generation ticket). This process's own writes are never served stale: each one
//! evicts its record itself. The interval holds only while the cache's generation stands
//! still: after any write of this process (or any invalidation), the next check asks at
//! once, so the `data_version` change a write of this process causes is seen at the next
//! request, not at whichever later request happens to fall 1 ms on. The interval is
//! measured with the monotonic clock; the
//! sessions' own time (`now`) is still only what the caller passes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloakroom::store::{Error, ErrorKind};
use rusqlite::{Connection, OpenFlags};

use super::{Cache, CachedStore, Channel};
use crate::SqliteStore;

/// How long an answer of `PRAGMA data_version` is trusted before it is asked again.
pub(super) const RECHECK: Duration = Duration::from_millis(1);

struct Watch {
    conn: Option<Connection>,
    seen: i64,
    /// When `data_version` last answered (`None` until it has, and after a failure).
    asked: Option<Instant>,
    /// The cache's generation after that answer was acted on.
    generation: u64,
}

pub(super) struct DataVersion {
    path: std::path::PathBuf,
    watch: Mutex<Watch>,
}

fn open(path: &std::path::Path) -> Result<Connection, rusqlite::Error> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn data_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

impl Channel for DataVersion {
    fn check(&self, cache: &Cache) {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        // `asked` is `None` after every failure, so an offline cache always asks.
        if watch.generation == cache.generation()
            && watch.asked.is_some_and(|at| at.elapsed() < RECHECK)
        {
            return;
        }
        if watch.conn.is_none() {
            match open(&self.path) {
                Ok(conn) => watch.conn = Some(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "session cache: cannot open the SQLite file to watch it; bypassing the cache");
                    cache.offline();
                    return;
                }
            }
        }
        let Some(conn) = &watch.conn else { return };
        let answer = data_version(conn);
        watch.asked = answer.as_ref().ok().map(|_| Instant::now());
        match answer {
            Ok(version) if !cache.is_online() => {
                watch.seen = version;
                cache.online();
            }
            Ok(version) if version != watch.seen => {
                watch.seen = version;
                cache.invalidate_all();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "session cache: PRAGMA data_version failed; bypassing the cache until it answers");
                watch.conn = None;
                cache.offline();
            }
        }
        watch.generation = cache.generation();
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
            watch: Mutex::new(Watch {
                conn: Some(conn),
                seen: 0,
                asked: None,
                generation: 0,
            }),
        });
        channel.check(&cache);
        Ok(Self::with_channel(store, cache, channel, None))
    }
}
