//! The SQLite store, the embedded default (feature `sqlite`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use cloakroom::store::{Error, ErrorKind};
use cloakroom::{IdHash, Record};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

mod batch;
mod options;

pub use options::{SqliteOptions, Synchronous};

/// The schema, one entry per version: entry `i` migrates version `i` to `i + 1`. The
/// `schema_version` table holds the version a database is at; [`SqliteStore::open`] applies
/// the missing steps in one transaction. Never edit a released step: append one.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE sessions (
        id         BLOB PRIMARY KEY NOT NULL, -- SHA-256 of the session id, 32 bytes
        user_id    TEXT,                      -- the record's user, for the per-user index
        expires_at INTEGER NOT NULL,          -- min(idle, absolute deadline), unix seconds
        version    INTEGER NOT NULL,          -- compare-and-swap version
        record     BLOB NOT NULL              -- Record::encode
    );
    CREATE INDEX sessions_by_user ON sessions (user_id) WHERE user_id IS NOT NULL;
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);
    CREATE TABLE user_epochs (
        user_id TEXT PRIMARY KEY NOT NULL,
        epoch   INTEGER NOT NULL
    );
"];

/// The schema version this build creates and understands.
pub const SQLITE_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A [`Store`](cloakroom::Store) in one SQLite file: the embedded default.
///
/// # Storage
///
/// One table `sessions` (id hash, user id, expiry, version, and the record as
/// [`Record::encode`] bytes) with indexes on the user and on the expiry, one table
/// `user_epochs`, and a `schema_version` table. The store creates the schema and migrates
/// older versions of it when it opens the file, and refuses a file whose schema is newer
/// than it knows. The file is created `0600` (SQLite gives its `-wal` and `-shm` files the
/// same mode).
///
/// # Durability
///
/// The database runs in WAL mode with `synchronous = NORMAL` by default: an acknowledged
/// write survives `kill -9` of the process; [`Synchronous::Full`] makes it survive a power
/// loss too, at one `fsync` per write. See [`Synchronous`].
///
/// # Connections
///
/// One writer connection behind a mutex, and a small pool of reader connections. SQLite
/// lets one writer at a time commit whatever the number of connections, so more writer
/// connections in one process would only trade the mutex for `SQLITE_BUSY` retries and the
/// busy timeout; readers in WAL mode run in parallel with each other and with the writer,
/// so loads (the hot path) do not queue behind writes. Other processes may open the same
/// file: they are ordered by SQLite's own locks and wait up to the busy timeout.
///
/// Compare-and-swap is one statement, `UPDATE … WHERE id = ? AND version = ?`;
/// [`Store::apply`](cloakroom::Store::apply) (a request's commit) reads, merges and writes
/// in a `BEGIN IMMEDIATE` transaction on the writer connection, so overlapping commits
/// queue (behind the writer mutex, and behind other processes for up to the busy timeout)
/// rather than fail; the commits that queued while the writer was busy are written
/// together in one transaction (group commit; each still reads the row as the ones before
/// it left it, and a failure of the database fails them all, so nothing is acknowledged
/// that was not committed); purges
/// delete at most `limit` rows per statement (one short transaction per batch). Every
/// call runs on tokio's blocking pool ([`tokio::task::spawn_blocking`]).
///
/// # Errors
///
/// A file that is not a database or is damaged, a locked database (past the busy timeout),
/// a missing or read-only directory, a full disk give [`ErrorKind::Unavailable`]: the store
/// fails closed. [`ErrorKind::Corrupt`] means one record that does not decode. The SQLite
/// error is the `source()`.
///
/// # Example
///
/// ```
/// use cloakroom::{Policy, Record, SessionId, Store};
/// use cloakroom_stores::{SqliteOptions, SqliteStore, Synchronous};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStore::open_with(
///     SqliteOptions::new(dir.path().join("sessions.db")).with_synchronous(Synchronous::Full),
/// )
/// .await?;
/// let record = Record::new(SessionId::generate()?.hash(), 1_700_000_000, &Policy::default());
/// store.create(&record, record.last_seen).await?;
/// assert_eq!(store.update(&record, 1_700_000_001).await?, 2);
/// # Ok::<(), cloakroom::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("options", &self.inner.options)
            .finish()
    }
}

struct Inner {
    options: SqliteOptions,
    writer: Mutex<Connection>,
    readers: Mutex<Readers>,
    /// Signalled when a reader comes back (or is closed).
    reader_free: Condvar,
    /// Commits waiting for the writer, written together (group commit).
    batch: batch::Queue,
    /// The writer connection's last answer to `PRAGMA data_version`, for
    /// [`SqliteStore::others_committed`]; read and written only with the writer held.
    writer_seen: Mutex<Option<i64>>,
}

/// The reader pool: idle connections, and how many are open (idle or in use).
struct Readers {
    idle: Vec<Connection>,
    open: usize,
    /// The most ever open at once (checked by a unit test).
    #[cfg(test)]
    peak: usize,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database file `path` with the default
    /// [`SqliteOptions`].
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the file cannot be created or opened, is locked past
    /// the busy timeout, has a newer schema, is not a SQLite database or is damaged.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, Error> {
        Self::open_with(SqliteOptions::new(path)).await
    }

    /// Opens the database with `options`.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_with(options: SqliteOptions) -> Result<Self, Error> {
        let inner = tokio::task::spawn_blocking(move || Inner::open(options))
            .await
            .map_err(|e| Error::unavailable("a SQLite store worker thread failed", e))??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.options.path
    }

    /// Whether any connection other than this store's writer (another process, another
    /// store on the same file) committed to the file since the last call: SQLite's
    /// `PRAGMA data_version` on the writer connection moves for every commit but its own.
    /// The session cache asks this when the file changed, to tell this store's own commits
    /// (whose records it already evicted or wrote through) from anyone else's. Blocking;
    /// with `wait` false, gives up (`None`) rather than wait for the writer. `None` also when
    /// SQLite fails to answer, and `Some(true)` on the first call: the caller must then
    /// assume others did commit.
    pub(crate) fn others_committed(&self, wait: bool) -> Option<bool> {
        let writer = if wait {
            lock(&self.inner.writer)
        } else {
            match self.inner.writer.try_lock() {
                Ok(writer) => writer,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        };
        let version: i64 = writer
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .ok()?;
        let mut seen = lock(&self.inner.writer_seen);
        let others = *seen != Some(version);
        *seen = Some(version);
        Some(others)
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::unavailable("a SQLite store worker thread failed", e))?
    }
}

/// Every SQLite error is the store being unavailable, a damaged or foreign file included
/// (`SQLITE_CORRUPT`, `SQLITE_NOTADB`): failing closed, so the session layer answers 503
/// rather than treating every session as absent. [`ErrorKind::Corrupt`] is kept for one
/// record whose bytes do not decode ([`decode`]).
fn db_err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| {
        let damaged = matches!(
            &e,
            rusqlite::Error::SqliteFailure(failure, _)
                if matches!(failure.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        );
        let message = if damaged {
            format!("sqlite store: {what}: the database file is damaged or not a database: {e}")
        } else {
            format!("sqlite store: {what}: {e}")
        };
        Error::new(ErrorKind::Unavailable, message).with_source(e)
    }
}

/// SQLite integers are signed: times past `i64::MAX` (never in practice) are capped.
fn sql_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn sql_version(v: u64) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::new(ErrorKind::InvalidInput, "record version too large"))
}

fn decode(id: &IdHash, bytes: &[u8]) -> Result<Record, Error> {
    let record = Record::decode(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            format!("sqlite store: the record of session {id} does not decode"),
        )
        .with_source(e)
    })?;
    if record.id_hash != *id {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("sqlite store: the row of session {id} holds another session's record"),
        ));
    }
    Ok(record)
}

/// The record of `id` if it is live at `now`, read on `conn` (a reader, or the write
/// transaction about to change it); `what` names the operation in errors.
fn live_record(
    conn: &Connection,
    id: &IdHash,
    now: u64,
    what: &str,
) -> Result<Option<Record>, Error> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT record FROM sessions WHERE id = ?1 AND expires_at > ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![id.as_bytes(), sql_time(now)], |row| row.get(0))
                .optional()
        })
        .map_err(db_err(what))?;
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let record = decode(id, &bytes)?;
    Ok(record.is_live(now).then_some(record))
}

/// A row of `id, record`, as bytes.
type IdRecordRow = (Vec<u8>, Vec<u8>);

/// The rows of `sql` (which selects `id, record`) with `params`, as bytes; `what` names the
/// operation in errors.
fn id_record_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    what: &str,
) -> Result<Vec<IdRecordRow>, Error> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(db_err(what))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under the lock cannot leave a half-done change: SQLite rolls back an open
    // transaction when its guard is dropped.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn open(options: SqliteOptions) -> Result<Self, Error> {
        let path = options.path.clone();
        let at = path.display().to_string();
        // Create the file ourselves so it is 0600 from the start (SQLite would use 0644).
        if let Err(e) = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            let what = format!("sqlite store: cannot create or open {at}: {e}");
            return Err(Error::new(ErrorKind::Unavailable, what).with_source(e));
        }
        let mut writer = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err(&at))?;
        writer
            .busy_timeout(options.busy_timeout)
            .map_err(db_err(&at))?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db_err(&at))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("sqlite store: {at} cannot use WAL mode (journal mode is {mode})"),
            ));
        }
        writer
            .pragma_update(None, "synchronous", options.synchronous.pragma())
            .map_err(db_err(&at))?;
        migrate(&mut writer, &at)?;
        let first_reader = open_reader(&options)?;
        Ok(Self {
            options,
            writer: Mutex::new(writer),
            readers: Mutex::new(Readers {
                idle: vec![first_reader],
                open: 1,
                #[cfg(test)]
                peak: 1,
            }),
            reader_free: Condvar::new(),
            batch: batch::Queue::default(),
            writer_seen: Mutex::new(None),
        })
    }

    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        f(&mut lock(&self.writer))
    }

    /// Runs `f` on a reader connection: an idle one, a new one while fewer than
    /// `max_readers` are open, or else the next one to come free (bounded, so a burst of
    /// reads cannot open a connection each).
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let conn = {
            let mut readers = lock(&self.readers);
            loop {
                if let Some(conn) = readers.idle.pop() {
                    break Some(conn);
                }
                if readers.open < self.options.max_readers {
                    readers.open += 1;
                    #[cfg(test)]
                    {
                        readers.peak = readers.peak.max(readers.open);
                    }
                    break None;
                }
                readers = self
                    .reader_free
                    .wait(readers)
                    .unwrap_or_else(|e| e.into_inner());
            }
        };
        let conn = match conn {
            Some(conn) => conn,
            None => match open_reader(&self.options) {
                Ok(conn) => conn,
                Err(e) => {
                    lock(&self.readers).open -= 1;
                    self.reader_free.notify_one();
                    return Err(e);
                }
            },
        };
        let result = f(&conn);
        let mut readers = lock(&self.readers);
        if readers.idle.len() < self.options.max_idle_readers {
            readers.idle.push(conn);
        } else {
            readers.open -= 1;
            drop(conn);
        }
        drop(readers);
        self.reader_free.notify_one();
        result
    }

    fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let bytes = record.encode()?;
        let version = sql_version(record.version)?;
        self.with_writer(|conn| {
            // An existing record is judged at the caller's `now`, and replaced only if
            // expired then.
            let changed = conn
                .prepare_cached(
                    "INSERT INTO sessions (id, user_id, expires_at, version, record)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET
                        user_id = excluded.user_id, expires_at = excluded.expires_at,
                        version = excluded.version, record = excluded.record
                     WHERE sessions.expires_at <= ?6",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        record.id_hash.as_bytes(),
                        record.user_id,
                        sql_time(record.expires_at()),
                        version,
                        bytes,
                        sql_time(now),
                    ])
                })
                .map_err(db_err("create"))?;
            if changed == 0 {
                return Err(Error::conflict());
            }
            Ok(())
        })
    }

    fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        self.with_reader(|conn| live_record(conn, id, now, "load"))
    }

    fn update(&self, mut next: Record, now: u64) -> Result<u64, Error> {
        let expected = sql_version(next.version)?;
        next.version = next
            .version
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "record version overflow"))?;
        let new = sql_version(next.version)?;
        let bytes = next.encode()?;
        let args = params![
            next.user_id,
            sql_time(next.expires_at()),
            new,
            bytes,
            next.id_hash.as_bytes(),
            expected,
            sql_time(now),
        ];
        self.with_writer(|conn| {
            // SQLite rewrites the index entries of every column an UPDATE sets, changed or
            // not. The user of a session rarely changes, so first try without setting
            // `user_id` (the statement matches only if it is unchanged), which keeps
            // `sessions_by_user` out of the write; then the full statement.
            for sql in [
                "UPDATE sessions SET expires_at = ?2, version = ?3, record = ?4
                 WHERE id = ?5 AND version = ?6 AND expires_at > ?7 AND user_id IS ?1",
                "UPDATE sessions SET user_id = ?1, expires_at = ?2, version = ?3, record = ?4
                 WHERE id = ?5 AND version = ?6 AND expires_at > ?7",
            ] {
                let changed = conn
                    .prepare_cached(sql)
                    .and_then(|mut stmt| stmt.execute(args))
                    .map_err(db_err("update"))?;
                if changed == 1 {
                    return Ok(next.version);
                }
            }
            // Nothing written: tell a lost race from a session that is gone.
            let live: Option<i64> = conn
                .prepare_cached("SELECT version FROM sessions WHERE id = ?1 AND expires_at > ?2")
                .and_then(|mut stmt| {
                    stmt.query_row(params![next.id_hash.as_bytes(), sql_time(now)], |row| {
                        row.get(0)
                    })
                    .optional()
                })
                .map_err(db_err("update"))?;
            Err(match live {
                Some(_) => Error::conflict(),
                None => Error::not_found(),
            })
        })
    }

    fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        self.with_writer(|conn| {
            // Read, change two fields, write back, in one write transaction so no other
            // process's update slips in between.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err("touch"))?;
            let Some(mut record) = live_record(&tx, id, now, "touch")? else {
                return Err(Error::not_found());
            };
            record.last_seen = now;
            record.idle_deadline = idle_deadline.min(record.absolute_deadline);
            let bytes = record.encode()?;
            tx.prepare_cached("UPDATE sessions SET expires_at = ?1, record = ?2 WHERE id = ?3")
                .and_then(|mut stmt| {
                    stmt.execute(params![sql_time(record.expires_at()), bytes, id.as_bytes()])
                })
                .map_err(db_err("touch"))?;
            tx.commit().map_err(db_err("touch"))
        })
    }

    fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        self.with_writer(|conn| {
            conn.prepare_cached("DELETE FROM sessions WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![id.as_bytes()]))
                .map(|n| n > 0)
                .map_err(db_err("delete"))
        })
    }

    fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let rows = self.with_reader(|conn| {
            id_record_rows(
                conn,
                "SELECT id, record FROM sessions WHERE user_id = ?1 AND expires_at > ?2",
                params![user, sql_time(now)],
                "sessions_of",
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, bytes) in rows {
            let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) else {
                tracing::warn!("skipping a session row whose id is not 32 bytes");
                continue;
            };
            match decode(&IdHash::from_bytes(id), &bytes) {
                Ok(record) if record.is_live(now) => out.push(record),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(session = %IdHash::from_bytes(id), error = %e,
                        "skipping a corrupt session record");
                }
            }
        }
        Ok(out)
    }

    fn revoke_user_sessions(&self, user: &str, except: Option<&IdHash>) -> Result<u64, Error> {
        self.with_writer(|conn| {
            conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2")
                .and_then(|mut stmt| {
                    stmt.execute(params![user, except.map(|id| id.as_bytes().as_slice())])
                })
                .map(|n| n as u64)
                .map_err(db_err("revoke_user_sessions"))
        })
    }

    fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        let epoch: Option<i64> = self.with_reader(|conn| {
            conn.prepare_cached("SELECT epoch FROM user_epochs WHERE user_id = ?1")
                .and_then(|mut stmt| stmt.query_row([user], |row| row.get(0)).optional())
                .map_err(db_err("user_epoch"))
        })?;
        epoch_of(epoch.unwrap_or(0))
    }

    fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let epoch: i64 = self.with_writer(|conn| {
            conn.prepare_cached(
                "INSERT INTO user_epochs (user_id, epoch) VALUES (?1, 1)
                 ON CONFLICT (user_id) DO UPDATE SET epoch = epoch + 1
                 RETURNING epoch",
            )
            .and_then(|mut stmt| stmt.query_row([user], |row| row.get(0)))
            .map_err(db_err("bump_user_epoch"))
        })?;
        epoch_of(epoch)
    }

    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_writer(|conn| {
            // A batch deletes from the primary-key index at random places, so it dirties most
            // of that index's pages. With the connection's 2 MiB page cache a 50,000-row batch
            // spills dirty pages to the WAL before it commits and reads pages again; a cache
            // big enough for the batch, for the batch only, takes a third of the CPU off a
            // large purge (docs/benchmarks.md). The cache size is put back after the batch,
            // which frees the extra pages, so a daemon's writer does not keep them.
            let cache: i64 = conn
                .query_row("PRAGMA cache_size", [], |row| row.get(0))
                .map_err(db_err("purge_expired"))?;
            conn.pragma_update(None, "cache_size", PURGE_CACHE_SIZE)
                .map_err(db_err("purge_expired"))?;
            let purged = conn
                .prepare_cached(PURGE_SQL)
                .and_then(|mut stmt| stmt.execute(params![sql_time(now), limit]))
                .map_err(db_err("purge_expired"));
            let restored = conn
                .pragma_update(None, "cache_size", cache)
                .map_err(db_err("purge_expired"));
            let purged = purged?;
            restored?;
            Ok(purged)
        })
    }
}

/// One purge batch, by rowid: the inner SELECT reads only the expiry index (which holds the
/// rowid), and the DELETE finds each row by rowid, never by its random 32-byte key. Each
/// batch is its own statement and transaction, so the write lock is free between batches.
const PURGE_SQL: &str = "DELETE FROM sessions WHERE rowid IN
    (SELECT rowid FROM sessions WHERE expires_at <= ?1 LIMIT ?2)";

/// `PRAGMA cache_size` during a purge batch: 256 MiB at most (negative: KiB), of which a
/// batch uses what it touches (≈ 60 MiB for 50,000 rows of a million-row store).
const PURGE_CACHE_SIZE: i64 = -262_144;

fn epoch_of(epoch: i64) -> Result<u64, Error> {
    u64::try_from(epoch)
        .map_err(|_| Error::new(ErrorKind::Corrupt, "sqlite store: a user epoch is negative"))
}

fn open_reader(options: &SqliteOptions) -> Result<Connection, Error> {
    let at = options.path.display().to_string();
    let conn = Connection::open_with_flags(
        &options.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(&at))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(db_err(&at))?;
    // A reader never writes; say so, so a bug cannot make it.
    conn.pragma_update(None, "query_only", true)
        .map_err(db_err(&at))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, at: &str) -> Result<(), Error> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(at))?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db_err(at))?;
    let current: Option<i64> = tx
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .map_err(db_err(at))?;
    let current = current.unwrap_or(0);
    if current > SQLITE_SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "sqlite store: {at} has schema version {current}, newer than this build's \
                 {SQLITE_SCHEMA_VERSION}: upgrade Cloakroom"
            ),
        ));
    }
    let from = usize::try_from(current).unwrap_or(0);
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        let what = format!("{at}: migrating the schema to version {}", step + 1);
        tx.execute_batch(sql).map_err(db_err(&what))?;
    }
    if current < SQLITE_SCHEMA_VERSION {
        tx.execute("DELETE FROM schema_version", [])
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [SQLITE_SCHEMA_VERSION],
                )
            })
            .map_err(db_err(at))?;
        tracing::info!(
            path = at,
            from = current,
            to = SQLITE_SCHEMA_VERSION,
            "migrated the session database"
        );
    }
    tx.commit().map_err(db_err(at))
}

// Operator queries (find by id prefix, stats).
mod admin;

crate::blocking::blocking_store!(SqliteStore, "sqlite");
#[cfg(test)]
mod tests;
