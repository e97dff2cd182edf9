//! The file store: one file per session in a private directory (feature `file`).
//!
//! The seed kept sessions as `/tmp/session_N`; this is the same idea done safely:
//!
//! ```text
//! <dir>/                  0700, created by the store, must be owned by this process's user
//!   sessions/<id hash>    0600, one per session: `Record::encode` bytes, written atomically;
//!                         the file's mtime is set to the record's expiry (a purge hint)
//!   users/<user key>/<id hash>   empty files: the per-user index
//!   epochs/<user key>     the user's epoch, decimal
//!   locks/00..3f          lock files (flock), never deleted
//! ```
//!
//! `<id hash>` is the 64 hex digits of SHA-256(session id) ([`IdHash::to_hex`]) and
//! `<user key>` the 64 hex digits of SHA-256(user id), so neither a session id nor a user id
//! (any Unicode, any length) ever becomes a path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash, Record};
use sha2::{Digest, Sha256};

mod index;
mod purge;

/// How many lock files guard the sessions and epochs (chosen by the first byte of the id
/// hash or user key). Two records share a lock with probability 1/64; holding it is short.
const STRIPES: usize = 64;
/// Expiry hints (file mtimes) are capped here (9999-12-31T23:59:59Z), far inside what every
/// file system stores.
const MAX_HINT: u64 = 253_402_300_799;
/// A temporary file left by a writer that died is removed by a purge after this long.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// A [`Store`](cloakroom::Store) that keeps one file per session in a directory: for one machine without a
/// database.
///
/// # Guarantees
///
/// - **Private.** [`FileStore::open`] creates the directory `0700` (and its four
///   subdirectories), refuses one that is a symlink, is accessible to group or others, or is
///   owned by another user, and creates every file `0600` with `O_NOFOLLOW`.
/// - **Atomic and durable.** Every write goes to a temporary file in the same directory,
///   which is `fsync`ed, renamed over the record, and the directory is `fsync`ed: a reader
///   or a process killed at any point sees the old record or the new one, never a torn one,
///   and an acknowledged write survives a crash of the process and of the machine (to the
///   extent the file system honours `fsync`). Deletes `fsync` the directory too, so a
///   revoked session does not come back after a power loss.
/// - **Compare-and-swap across processes.** Creates, updates, applies, touches, deletes and
///   epoch bumps run under an exclusive `flock` of one of 64 lock files (plus a mutex inside
///   the process), so several processes may share one directory. A commit
///   ([`Store::apply`](cloakroom::Store::apply)) reads, merges and writes under that lock:
///   overlapping commits wait for each other, none fails. Loads take no lock: the rename
///   makes them atomic.
/// - **Per-user index.** `users/<user key>/` holds one empty file per session of the user.
///   It is written before the record and cleaned after it, so it may briefly list a session
///   that is gone (entries are checked against the record and pruned) but never misses one.
/// - **Purge** walks `sessions/` and reads only files whose mtime (the expiry hint) has
///   passed; it stops after `limit` deletions, holding a lock only per file.
///
/// Blocking file I/O runs on tokio's blocking pool ([`tokio::task::spawn_blocking`]).
///
/// # Example
///
/// ```
/// use cloakroom::{Policy, Record, SessionId, Store};
/// use cloakroom_stores::FileStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileStore::open(dir.path().join("sessions")).await?;
/// let record = Record::new(SessionId::generate()?.hash(), 1_700_000_000, &Policy::default());
/// store.create(&record, record.last_seen).await?;
/// assert_eq!(store.load(&record.id_hash, 1_700_000_001).await?, Some(record));
/// # Ok::<(), cloakroom::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.root)
            .finish()
    }
}

struct Inner {
    root: PathBuf,
    sessions: PathBuf,
    users: PathBuf,
    epochs: PathBuf,
    locks_dir: PathBuf,
    /// Open lock files, opened on first use. The mutex orders the threads of this process
    /// (`flock` is per open file, so threads sharing it would not exclude each other); the
    /// `flock` orders processes.
    locks: Vec<Mutex<Option<File>>>,
    /// Expired records found by the last directory scan of a purge, not yet deleted.
    candidates: Mutex<Vec<IdHash>>,
    /// How many directory scans purges made (checked by a unit test).
    #[cfg(test)]
    scans: AtomicU64,
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if the directory cannot be created or used (a parent is a
    /// regular file, no permission, read-only file system), or is unsafe: a symlink, not a
    /// directory, accessible to group or others, or owned by another user. The message names
    /// the path and the reason; the OS error is the `source()`.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = dir.into();
        let inner = blocking(move || Inner::open(root)).await?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The file that holds the record of `id` (whether or not it exists).
    pub fn record_path(&self, id: &IdHash) -> PathBuf {
        self.inner.record_path(id)
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || f(&inner)).await
    }
}

async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::unavailable("a file store worker thread failed", e))?
}

fn unavailable(what: String, e: io::Error) -> Error {
    Error::unavailable(format!("file store: {what}: {e}"), e)
}

fn io_at(op: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{op} {}", shown(path));
    move |e| unavailable(what, e)
}

/// A path for a message: 64-hex-digit components (id hashes, user keys) are cut to their
/// 8-digit prefix, as everywhere in logs.
fn shown(path: &Path) -> String {
    path.iter()
        .map(|part| {
            let part = part.to_string_lossy();
            if part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                format!("{}…", &part[..8])
            } else {
                part.into_owned()
            }
        })
        .collect::<PathBuf>()
        .display()
        .to_string()
}

fn user_key(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&digest);
    IdHash::from_bytes(bytes).to_hex()
}

fn stripe_of(first_byte: u8) -> usize {
    usize::from(first_byte) % STRIPES
}

fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open_read(path)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

fn sync_dir(path: &Path) -> Result<(), Error> {
    open_read(path)
        .and_then(|d| d.sync_all())
        .map_err(io_at("syncing directory", path))
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `dir/name` atomically: a temporary file in `dir`, written, given the
/// mtime `hint`, fsynced, renamed over `dir/name`, then `dir` fsynced.
fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    hint: Option<SystemTime>,
) -> Result<(), Error> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp.{name}.{}.{n}", std::process::id()));
    let target = dir.join(name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if let Some(hint) = hint {
            file.set_modified(hint)?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(unavailable(format!("writing {}", shown(&target)), e));
    }
    sync_dir(dir)
}

fn expiry_hint(record: &Record) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(record.expires_at().min(MAX_HINT))
}

/// Creates `path` as a private directory if missing and checks that it is one.
fn private_dir(path: &Path) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            // The umask may have taken bits we need; never more than 0700 though.
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(io_at("setting the mode of", path))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(unavailable(
                format!("creating directory {}", shown(path)),
                e,
            ))
        }
    }
    let meta = fs::symlink_metadata(path).map_err(io_at("inspecting", path))?;
    let refuse = |why: String| {
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("file store: refusing {}: {why}", shown(path)),
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link".into());
    }
    if !meta.is_dir() {
        return refuse("it is not a directory".into());
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return refuse(format!(
            "it is accessible to other users (mode {mode:o}); chmod 700 it or use another directory"
        ));
    }
    Ok(())
}

impl Inner {
    fn open(root: PathBuf) -> Result<Self, Error> {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_at("creating directory", parent))?;
        }
        private_dir(&root)?;
        // Owned by us? A file we create is owned by our effective user id; compare.
        let probe = root.join(format!(".owner-probe.{}", std::process::id()));
        let probe_meta = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&probe)
            .and_then(|f| f.metadata())
            .map_err(io_at("creating a file in", &root))?;
        let _ = fs::remove_file(&probe);
        let root_meta = fs::symlink_metadata(&root).map_err(io_at("inspecting", &root))?;
        if root_meta.uid() != probe_meta.uid() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "file store: refusing {}: it is owned by uid {}, not by this process's uid {}",
                    shown(&root),
                    root_meta.uid(),
                    probe_meta.uid()
                ),
            ));
        }
        let inner = Self {
            sessions: root.join("sessions"),
            users: root.join("users"),
            epochs: root.join("epochs"),
            locks_dir: root.join("locks"),
            locks: (0..STRIPES).map(|_| Mutex::new(None)).collect(),
            candidates: Mutex::new(Vec::new()),
            #[cfg(test)]
            scans: AtomicU64::new(0),
            root,
        };
        for dir in [
            &inner.sessions,
            &inner.users,
            &inner.epochs,
            &inner.locks_dir,
        ] {
            private_dir(dir)?;
        }
        sync_dir(&inner.root)?;
        Ok(inner)
    }

    fn record_path(&self, id: &IdHash) -> PathBuf {
        self.sessions.join(id.to_hex())
    }

    fn lock(&self, stripe: usize) -> Result<Locked<'_>, Error> {
        // A panic while holding the mutex leaves nothing half-changed in memory (the files
        // are changed atomically), so a poisoned mutex is still usable.
        let mut slot = self.locks[stripe].lock().unwrap_or_else(|e| e.into_inner());
        let file = match slot.take() {
            Some(file) => file,
            None => {
                let path = self.locks_dir.join(format!("{stripe:02x}"));
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_at("opening lock file", &path))?
            }
        };
        let locked = file.lock();
        *slot = Some(file);
        locked.map_err(io_at("locking", &self.locks_dir))?;
        Ok(Locked(slot))
    }

    fn lock_record(&self, id: &IdHash) -> Result<Locked<'_>, Error> {
        self.lock(stripe_of(id.as_bytes()[0]))
    }

    /// Fails if the store's directory has gone: a missing file must not be read as "no
    /// session" when the whole store is missing (fail closed).
    fn check_dir(&self, dir: &Path) -> Result<(), Error> {
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("file store: {} is no longer a directory", shown(dir)),
            )),
            Err(e) => Err(unavailable(
                format!("the store's directory {} is gone", shown(dir)),
                e,
            )),
        }
    }

    /// The stored record of `id`, expired or not; `None` if there is no file.
    fn read_record(&self, id: &IdHash) -> Result<Option<Record>, Error> {
        let path = self.record_path(id);
        let bytes = match read_all(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_dir(&self.sessions)?;
                return Ok(None);
            }
            Err(e) => return Err(unavailable(format!("reading {}", shown(&path)), e)),
        };
        let record = Record::decode(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("file store: {} does not decode", shown(&path)),
            )
            .with_source(e)
        })?;
        if record.id_hash != *id {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "file store: {} holds the record of another session ({})",
                    shown(&path),
                    record.id_hash
                ),
            ));
        }
        Ok(Some(record))
    }

    fn write_record(&self, record: &Record) -> Result<(), Error> {
        let bytes = record.encode()?;
        write_atomic(
            &self.sessions,
            &record.id_hash.to_hex(),
            &bytes,
            Some(expiry_hint(record)),
        )
    }

    /// Removes the record file; whether it was there. Does not sync the directory.
    fn unlink_record(&self, id: &IdHash) -> Result<bool, Error> {
        let path = self.record_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(unavailable(format!("removing {}", shown(&path)), e)),
        }
    }

    fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        let id = &record.id_hash;
        let _lock = self.lock_record(id)?;
        // An existing record is judged at the caller's `now`: an expired one is replaced.
        let replaced_user = match self.read_record(id) {
            Ok(Some(old)) if old.is_live(now) => return Err(Error::conflict()),
            Ok(Some(old)) => old.user_id,
            Ok(None) => None,
            // Never overwrite what we cannot read: an operator may want to look at it.
            Err(e) if e.kind() == ErrorKind::Corrupt => return Err(Error::conflict()),
            Err(e) => return Err(e),
        };
        if let Some(user) = &record.user_id {
            self.index_add(user, id)?;
        }
        self.write_record(record)?;
        if let Some(old) = replaced_user.filter(|old| Some(old) != record.user_id.as_ref()) {
            self.index_remove(&old, id)?;
        }
        Ok(())
    }

    fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        // No lock: records are replaced by rename, so a read sees one whole version.
        match self.read_record(id) {
            Ok(Some(record)) if record.is_live(now) => Ok(Some(record)),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn update(&self, record: Record, now: u64) -> Result<u64, Error> {
        let record = &record;
        let id = &record.id_hash;
        let _lock = self.lock_record(id)?;
        let current = match self.read_record(id)? {
            Some(current) if current.is_live(now) => current,
            _ => return Err(Error::not_found()),
        };
        if current.version != record.version {
            return Err(Error::conflict());
        }
        let mut next = record.clone();
        next.version = record
            .version
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "record version overflow"))?;
        let moved = current.user_id != next.user_id;
        if moved {
            if let Some(user) = &next.user_id {
                self.index_add(user, id)?;
            }
        }
        self.write_record(&next)?;
        if moved {
            if let Some(old) = &current.user_id {
                self.index_remove(old, id)?;
            }
        }
        Ok(next.version)
    }

    fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        // Under the record's stripe lock (mutex + flock): read, merge, write atomically by
        // rename. Overlapping commits queue on the lock; none fails.
        let _lock = self.lock_record(id)?;
        let current = match self.read_record(id)? {
            Some(current) if current.is_live(now) => current,
            _ => return Err(Error::not_found()),
        };
        let next = cloakroom::apply_changes(current, changes, now, idle_deadline)?;
        // The user does not change: the index is left as it is.
        self.write_record(&next)?;
        Ok(Applied::new(next.version, next.idle_deadline))
    }

    fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        let _lock = self.lock_record(id)?;
        let mut record = match self.read_record(id)? {
            Some(record) if record.is_live(now) => record,
            _ => return Err(Error::not_found()),
        };
        record.last_seen = now;
        record.idle_deadline = idle_deadline.min(record.absolute_deadline);
        self.write_record(&record)
    }

    fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        let _lock = self.lock_record(id)?;
        let user = match self.read_record(id) {
            Ok(Some(record)) => record.user_id,
            Ok(None) => return Ok(false),
            // A corrupt record is deleted all the same; its index entry (if any) is pruned
            // when the user's sessions are next listed.
            Err(e) if e.kind() == ErrorKind::Corrupt => None,
            Err(e) => return Err(e),
        };
        let existed = self.unlink_record(id)?;
        sync_dir(&self.sessions)?;
        if let Some(user) = user {
            self.index_remove(&user, id)?;
        }
        Ok(existed)
    }

    fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        for id in self.index_entries(user)? {
            match self.read_record(&id) {
                Ok(Some(record)) if record.user_id.as_deref() == Some(user) => {
                    if record.is_live(now) {
                        out.push(record);
                    }
                }
                Ok(_) => self.prune_entry(user, &id)?,
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(session = %id, error = %e, "skipping a corrupt session record");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn revoke_user_sessions(&self, user: &str, except: Option<&IdHash>) -> Result<u64, Error> {
        let mut count = 0;
        for id in self.index_entries(user)? {
            if Some(&id) == except {
                continue;
            }
            let _lock = self.lock_record(&id)?;
            let revoke = match self.read_record(&id) {
                Ok(Some(record)) => record.user_id.as_deref() == Some(user),
                Ok(None) => false,
                // Listed under this user and unreadable: revoking more is the safe side.
                Err(e) if e.kind() == ErrorKind::Corrupt => true,
                Err(e) => return Err(e),
            };
            if revoke && self.unlink_record(&id)? {
                count += 1;
            }
            self.index_remove(user, &id)?;
        }
        if count > 0 {
            sync_dir(&self.sessions)?;
        }
        Ok(count)
    }

    fn read_epoch(&self, path: &Path) -> Result<u64, Error> {
        let bytes = match read_all(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_dir(&self.epochs)?;
                return Ok(0);
            }
            Err(e) => return Err(unavailable(format!("reading {}", shown(path)), e)),
        };
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("file store: {} does not hold an epoch", shown(path)),
                )
            })
    }

    fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.read_epoch(&self.epochs.join(user_key(user)))
    }

    fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        let key = user_key(user);
        let stripe = u8::from_str_radix(&key[..2], 16).unwrap_or(0);
        let _lock = self.lock(stripe_of(stripe))?;
        let next = self
            .read_epoch(&self.epochs.join(&key))?
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "user epoch overflow"))?;
        write_atomic(&self.epochs, &key, format!("{next}\n").as_bytes(), None)?;
        Ok(next)
    }
}

/// A held stripe lock: the in-process mutex and the `flock`, released on drop.
struct Locked<'a>(MutexGuard<'a, Option<File>>);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.0.as_ref() {
            let _ = file.unlock();
        }
    }
}

// Operator queries (find by id prefix, stats).
mod admin;

crate::blocking::blocking_store!(FileStore, "file");

#[cfg(test)]
mod tests;
