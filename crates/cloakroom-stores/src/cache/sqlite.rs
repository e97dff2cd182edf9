//! The SQLite channel: `PRAGMA data_version` on a connection of the cache's own.
//!
//! SQLite answers `PRAGMA data_version` with a number that changes whenever another
//! connection (of this process or any other: a second application process, the operator
//! CLI) committed to the file since this connection last asked. It does not say what
//! changed, so a change drops the whole cache. Asking costs a read lock on the WAL index in
//! shared memory and no disk read, so it is asked before every hit and after every read that
//! fills the cache: a write committed anywhere is never served stale, with no delay at all.

use std::sync::{Arc, Mutex};

use cloakroom::{Error, ErrorKind};
use rusqlite::{Connection, OpenFlags};

use super::{Cache, CachedStore, Channel};
use crate::SqliteStore;

struct Watch {
    conn: Option<Connection>,
    seen: i64,
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
        match data_version(conn) {
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
            }),
        });
        channel.check(&cache);
        Ok(Self::with_channel(store, cache, channel, None))
    }
}
