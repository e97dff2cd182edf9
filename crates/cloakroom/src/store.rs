//! The storage contract every backend implements: the [`Store`] trait, its own
//! [`Error`] (only the kinds a store can mean), and the helpers stores share.

mod error;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;

use crate::id::IdHash;
use crate::record::{Record, Value};

pub use error::{Error, ErrorKind};

/// One request's changes to a session's data, key by key: each key is either set to a
/// MessagePack value or removed. [`Store::apply`] writes them onto the latest stored data,
/// so two requests that change different keys both keep their writes.
///
/// `Debug` shows the keys, never the values (the CSRF secret is one of them).
///
/// ```
/// use cloakroom::{Changes, Value};
///
/// let mut changes = Changes::new();
/// changes.set("cart", Value::from(3)).remove("flash");
/// assert_eq!(changes.len(), 2);
/// assert_eq!(changes.get("cart"), Some(Some(&Value::from(3))));
/// assert_eq!(changes.get("flash"), Some(None));
/// assert_eq!(changes.get("other"), None);
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Changes {
    entries: BTreeMap<String, Option<Value>>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` (replacing an earlier change of the same key).
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.entries.insert(key.into(), Some(value));
        self
    }

    /// Removes `key` (replacing an earlier change of the same key).
    pub fn remove(&mut self, key: impl Into<String>) -> &mut Self {
        self.entries.insert(key.into(), None);
        self
    }

    /// The change of `key`: `Some(Some(value))` set, `Some(None)` removed, `None` unchanged.
    pub fn get(&self, key: &str) -> Option<Option<&Value>> {
        self.entries.get(key).map(Option::as_ref)
    }

    /// Whether there is no change at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many keys change.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The changes in key order: `(key, Some(value))` to set, `(key, None)` to remove.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&Value>)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// Applies the changes to `data`.
    pub fn apply_to(&self, data: &mut BTreeMap<String, Value>) {
        for (k, v) in &self.entries {
            match v {
                Some(v) => {
                    data.insert(k.clone(), v.clone());
                }
                None => {
                    data.remove(k);
                }
            }
        }
    }
}

impl FromIterator<(String, Option<Value>)> for Changes {
    fn from_iter<I: IntoIterator<Item = (String, Option<Value>)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { entries } = self;
        let mut list = f.debug_map();
        for (k, v) in entries {
            list.entry(k, &if v.is_some() { "set" } else { "remove" });
        }
        list.finish()
    }
}

/// What [`Store::apply`] did: the record's new version and idle deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    /// The version the record has now (the one it had plus one).
    pub version: u64,
    /// The idle deadline the record has now (never earlier than before).
    pub idle_deadline: u64,
}

impl Applied {
    /// What a store returns from [`Store::apply`].
    pub fn new(version: u64, idle_deadline: u64) -> Self {
        Self {
            version,
            idle_deadline,
        }
    }
}

/// What [`Store::stats`] counts: the store's size at one moment, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Records live at the `now` asked about.
    pub live: u64,
    /// Records no longer live that are still stored (a purge would remove them).
    pub expired_not_purged: u64,
    /// The bytes the records take, where the store can tell (`None` otherwise).
    pub bytes: Option<u64>,
}

impl Stats {
    /// What a store returns from [`Store::stats`].
    pub fn new(live: u64, expired_not_purged: u64, bytes: Option<u64>) -> Self {
        Self {
            live,
            expired_not_purged,
            bytes,
        }
    }
}

/// Whether `prefix` is a usable id-hash prefix: 1 to 64 lower-case hex digits.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming what is wrong.
pub fn check_id_prefix(prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() || prefix.len() > 64 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "an id-hash prefix has 1 to 64 hex digits, not {}",
                prefix.len()
            ),
        ));
    }
    if !prefix
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "an id-hash prefix is lower-case hex digits (0-9, a-f)",
        ));
    }
    Ok(())
}

/// The record `current` becomes when `changes` are applied at `now` with the idle deadline
/// asked for: its data changed key by key, its version plus one, `last_seen` and the idle
/// deadline moved forward (never back, never past the absolute deadline). Everything else
/// (user, epoch, device, creation, absolute deadline) is kept. For stores that implement
/// [`Store::apply`] by reading and writing whole records under their own lock.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] if the version would overflow.
pub fn apply_changes(
    mut current: Record,
    changes: &Changes,
    now: u64,
    idle_deadline: u64,
) -> Result<Record, Error> {
    changes.apply_to(&mut current.data);
    current.version = current
        .version
        .checked_add(1)
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "record version overflow"))?;
    current.last_seen = current.last_seen.max(now);
    current.idle_deadline = current
        .idle_deadline
        .max(idle_deadline.min(current.absolute_deadline));
    Ok(current)
}

/// [`Store::apply`] built from [`Store::load`] and [`Store::update`]: read, apply, write
/// under compare-and-swap, and on `Conflict` read again, with no limit on the number of
/// attempts (every conflict means another writer succeeded, so the store as a whole always
/// makes progress). Between attempts it yields to the executor, 1, 2, 4, … up to 64 times,
/// so the writer that won can finish. This is what the trait's default `apply` does; a
/// store whose backend can merge atomically itself should do that instead (one round trip,
/// no retries).
///
/// # Errors
/// As [`Store::apply`].
pub async fn apply_by_compare_and_swap<S: Store + ?Sized>(
    store: &S,
    id: &IdHash,
    changes: &Changes,
    now: u64,
    idle_deadline: u64,
) -> Result<Applied, Error> {
    let mut backoff = 1u32;
    loop {
        let Some(current) = store.load(id, now).await? else {
            return Err(Error::not_found());
        };
        let expected = current.version;
        let mut next = apply_changes(current, changes, now, idle_deadline)?;
        let idle = next.idle_deadline;
        next.version = expected;
        match store.update(&next, now).await {
            Ok(version) => return Ok(Applied::new(version, idle)),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                for _ in 0..backoff {
                    YieldNow(false).await;
                }
                backoff = (backoff * 2).min(64);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Gives the executor one turn (any executor: no timer needed).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Where session records live: memory, files, SQLite, Redis, PostgreSQL, or cloakroomd.
///
/// The trait is object-safe (`Arc<dyn Store>` is what the session layer holds). Every store
/// passes the conformance suite (`cloakroom::conformance::run`, feature `testing`); that
/// suite is the precise contract, the list below is its summary.
///
/// # The contract
///
/// - Records are keyed by [`IdHash`] (SHA-256 of the session id); a store never sees an id.
/// - Times are unix seconds passed in by the caller; a store reads no clock. A record is
///   *live* at `now` while `now < idle_deadline && now < absolute_deadline`
///   ([`Record::is_live`]). Anything that is not live is treated exactly as absent by every
///   operation; it may stay on disk until [`Store::purge_expired`] removes it.
/// - `version` starts at 1 (whatever [`Store::create`] is given is stored as is, and the
///   session layer always gives 1) and each successful [`Store::update`] stores
///   `record.version + 1`; each successful [`Store::apply`] adds 1 to the stored version.
/// - [`Store::apply`] is how the session layer commits a request's changes: atomic in the
///   store, never a `Conflict`, never reviving a deleted or expired record. A store
///   implements it natively where its backend can (a lock, a transaction, a script); the
///   default runs [`apply_by_compare_and_swap`].
/// - Errors are [`store::Error`](Error), whose kinds are only what a store can mean (the
///   session layer's `?` turns them into [`cloakroom::Error`](crate::Error)):
///   [`ErrorKind::NotFound`](ErrorKind::NotFound) and
///   [`ErrorKind::Conflict`](ErrorKind::Conflict) as documented per method;
///   [`ErrorKind::Unavailable`](ErrorKind::Unavailable) when the backend cannot do
///   the work (connection refused, database locked, disk full, read-only directory) with the
///   backend's error as `source()`; [`ErrorKind::Corrupt`](ErrorKind::Corrupt) when
///   stored bytes do not decode. A store never panics on what it reads back.
/// - Byte-oriented stores encode records with [`Record::encode`] / [`Record::decode`], so a
///   corrupt value is always [`ErrorKind::Corrupt`](ErrorKind::Corrupt).
/// - A write that returned `Ok` is durable to the store's documented level; a write that
///   failed left the old record or the new one, never a torn one.
/// - The store keeps a per-user index (for [`Store::sessions_of`] and
///   [`Store::revoke_user_sessions`]) in step with creates, updates that change `user_id`,
///   deletes and purges.
///
/// # Example
///
/// A compare-and-swap loop written by hand, then the same change as one
/// [`Store::apply`], against the memory store:
///
/// ```
/// use std::sync::Arc;
/// use cloakroom::store::ErrorKind;
/// use cloakroom::{Changes, MemoryStore, Policy, Record, SessionId, Store, Value};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let now = 1_700_000_000;
/// let id = SessionId::generate()?;
/// let mut record = Record::new(id.hash(), now, &Policy::default());
/// record.user_id = Some("user 950".into());
/// store.create(&record, now).await?;
/// assert_eq!(store.create(&record, now).await.unwrap_err().kind(), ErrorKind::Conflict);
///
/// // Read, change, write back under the version we read; on Conflict read again.
/// loop {
///     let mut latest = store.load(&id.hash(), now + 5).await?.expect("live");
///     latest.data.insert("cart".into(), Value::from(3));
///     match store.update(&latest, now + 5).await {
///         Ok(version) => { assert_eq!(version, 2); break; }
///         Err(e) if e.kind() == ErrorKind::Conflict => continue,
///         Err(e) => return Err(e.into()),
///     }
/// }
///
/// // What the session layer does: the store merges the changed keys itself.
/// let mut changes = Changes::new();
/// changes.set("theme", Value::from("dark"));
/// let applied = store.apply(&id.hash(), &changes, now + 6, now + 6 + 1800).await?;
/// assert_eq!(applied.version, 3);
/// let latest = store.load(&id.hash(), now + 6).await?.expect("live");
/// assert_eq!(latest.data.len(), 2);
///
/// assert_eq!(store.sessions_of("user 950", now + 6).await?.len(), 1);
/// // Past the idle deadline the record is gone, whether or not it was purged yet.
/// assert!(store.load(&id.hash(), now + 6 + 1800).await?.is_none());
/// assert_eq!(store.purge_expired(now + 6 + 1800, 100).await?, 1);
/// # Ok::<(), cloakroom::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new record.
    ///
    /// # Errors
    /// `Conflict` if a record with this id hash is live at `now` (one that has expired by
    /// `now` may be replaced); `Unavailable` if the backend fails.
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error>;

    /// The live record with this id hash, or `None` if there is none or it has expired.
    ///
    /// # Errors
    /// `Corrupt` if the stored bytes do not decode; `Unavailable` if the backend fails.
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error>;

    /// Compare-and-swap: replaces the stored record if its version is still
    /// `record.version`, storing every field of `record` with the version incremented, and
    /// returns the new version. `user_id` may change; the user index follows.
    ///
    /// # Errors
    /// `NotFound` if there is no live record (it was deleted or expired: never write it back);
    /// `Conflict` if the stored version differs (nothing is written); `Corrupt`,
    /// `Unavailable` as for [`Store::load`].
    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error>;

    /// Applies one request's changed keys to the live record `id`, atomically: sets and
    /// removes each key of `changes` on the data as stored *now* (not as some earlier read
    /// saw it), adds 1 to the version, sets `last_seen = max(last_seen, now)` and
    /// `idle_deadline = max(idle_deadline, min(idle_deadline_asked, absolute_deadline))`
    /// (sliding never shortens a session), and returns the new version and idle deadline.
    /// Every other field is kept: the user (so the per-user index is unchanged), epoch,
    /// device, creation time and absolute deadline.
    ///
    /// Concurrent calls on one record are serialised by the store: each one's keys are kept,
    /// and none of them fails because another overlapped.
    ///
    /// The default implementation is [`apply_by_compare_and_swap`]: correct, but it retries
    /// on every conflict. Every built-in store overrides it with one atomic operation.
    ///
    /// # Errors
    /// `NotFound` if there is no live record (deleted, revoked or expired: it is never
    /// written back); never `Conflict`; `Corrupt`, `Unavailable` as for [`Store::load`].
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        apply_by_compare_and_swap(self, id, changes, now, idle_deadline).await
    }

    /// Slides the idle deadline: sets `last_seen = now` and `idle_deadline =
    /// min(idle_deadline, absolute_deadline)`. Changes nothing else, and in particular not
    /// the version, so it never makes a concurrent [`Store::update`] fail.
    ///
    /// # Errors
    /// `NotFound` if there is no live record; `Corrupt`, `Unavailable` as for
    /// [`Store::load`].
    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error>;

    /// Deletes the record (live, expired or corrupt). Returns whether one was there.
    /// Deleting a missing record is not an error.
    ///
    /// # Errors
    /// `Unavailable` if the backend fails.
    async fn delete(&self, id: &IdHash) -> Result<bool, Error>;

    /// The live records of `user`, in no particular order.
    ///
    /// # Errors
    /// `Unavailable` if the backend fails; `Corrupt` if a record of the user does not decode
    /// (a store may instead skip it).
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error>;

    /// Deletes every record of `user` (live or not) except `except`, and returns how many
    /// were deleted.
    ///
    /// # Errors
    /// `Unavailable` if the backend fails.
    async fn revoke_user_sessions(&self, user: &str, except: Option<&IdHash>)
        -> Result<u64, Error>;

    /// The user's epoch: 0 until first bumped.
    ///
    /// # Errors
    /// `Unavailable` if the backend fails.
    async fn user_epoch(&self, user: &str) -> Result<u64, Error>;

    /// Atomically increments the user's epoch and returns the new value.
    ///
    /// # Errors
    /// `Unavailable` if the backend fails.
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error>;

    /// Deletes at most `limit` records that are not live at `now` (and their index entries)
    /// and returns how many it deleted. A count below `limit` means no expired record is
    /// left, so callers loop until the count is below `limit`; a store never holds a lock
    /// for more than one batch.
    ///
    /// # Errors
    /// `Unavailable` if the backend fails.
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error>;

    /// The live records whose id hash, in hex ([`IdHash::to_hex`]), starts with `prefix`
    /// (1 to 64 lower-case hex digits; [`check_id_prefix`]), in no particular order. For
    /// operators: it may walk the whole store.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](ErrorKind::Unsupported) from the default
    /// implementation (a store that cannot enumerate its records, such as memcached);
    /// `InvalidInput` for a bad prefix; `Unavailable` if the backend fails.
    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        let _ = (prefix, now);
        Err(Error::unsupported(
            self.store_name(),
            "find sessions by id prefix",
            "it cannot list its records",
        ))
    }

    /// How many records are live at `now`, how many are expired but not yet purged, and
    /// how many bytes they take where the store can tell. For operators: it may walk the
    /// whole store.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`](ErrorKind::Unsupported) from the default
    /// implementation (a store that cannot enumerate its records, such as memcached);
    /// `Unavailable` if the backend fails.
    async fn stats(&self, now: u64) -> Result<Stats, Error> {
        let _ = now;
        Err(Error::unsupported(
            self.store_name(),
            "count its sessions",
            "it cannot list its records",
        ))
    }

    /// A short name of the store for messages (`sqlite`, `redis`, ...).
    fn store_name(&self) -> &'static str {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full)
    }
}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        (**self).create(record, now).await
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        (**self).load(id, now).await
    }
    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        (**self).update(record, now).await
    }
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        (**self).apply(id, changes, now, idle_deadline).await
    }
    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        (**self).touch(id, now, idle_deadline).await
    }
    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        (**self).delete(id).await
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        (**self).sessions_of(user, now).await
    }
    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        (**self).revoke_user_sessions(user, except).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        (**self).user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        (**self).bump_user_epoch(user).await
    }
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        (**self).purge_expired(now, limit).await
    }
    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        (**self).find_by_prefix(prefix, now).await
    }
    async fn stats(&self, now: u64) -> Result<Stats, Error> {
        (**self).stats(now).await
    }
    fn store_name(&self) -> &'static str {
        (**self).store_name()
    }
}
