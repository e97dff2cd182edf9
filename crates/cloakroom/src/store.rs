//! The storage contract every backend implements.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Error;
use crate::id::IdHash;
use crate::record::Record;

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
///   `record.version + 1`.
/// - Errors: [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) and
///   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) as documented per method;
///   [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when the backend cannot do
///   the work (connection refused, database locked, disk full, read-only directory) with the
///   backend's error as `source()`; [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) when
///   stored bytes do not decode. A store never panics on what it reads back.
/// - Byte-oriented stores encode records with [`Record::encode`] / [`Record::decode`], so a
///   corrupt value is always [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt).
/// - A write that returned `Ok` is durable to the store's documented level; a write that
///   failed left the old record or the new one, never a torn one.
/// - The store keeps a per-user index (for [`Store::sessions_of`] and
///   [`Store::revoke_user_sessions`]) in step with creates, updates that change `user_id`,
///   deletes and purges.
///
/// # Example
///
/// The compare-and-swap loop the session layer runs, against the memory store:
///
/// ```
/// use std::sync::Arc;
/// use cloakroom::{ErrorKind, MemoryStore, Policy, Record, SessionId, Store, Value};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let now = 1_700_000_000;
/// let id = SessionId::generate()?;
/// let mut record = Record::new(id.hash(), now, &Policy::default());
/// record.user_id = Some("user 950".into());
/// store.create(&record).await?;
/// assert_eq!(store.create(&record).await.unwrap_err().kind(), ErrorKind::Conflict);
///
/// // Read, change, write back under the version we read; on Conflict read again.
/// loop {
///     let mut latest = store.load(&id.hash(), now + 5).await?.expect("live");
///     latest.data.insert("cart".into(), Value::from(3));
///     match store.update(&latest, now + 5).await {
///         Ok(version) => { assert_eq!(version, 2); break; }
///         Err(e) if e.kind() == ErrorKind::Conflict => continue,
///         Err(e) => return Err(e),
///     }
/// }
///
/// assert_eq!(store.sessions_of("user 950", now + 6).await?.len(), 1);
/// // Past the idle deadline the record is gone, whether or not it was purged yet.
/// assert!(store.load(&id.hash(), now + 5 + 1800).await?.is_none());
/// assert_eq!(store.purge_expired(now + 5 + 1800, 100).await?, 1);
/// # Ok::<(), cloakroom::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new record.
    ///
    /// # Errors
    /// `Conflict` if a live record with this id hash exists (an expired one may be
    /// replaced); `Unavailable` if the backend fails.
    async fn create(&self, record: &Record) -> Result<(), Error>;

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
}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn create(&self, record: &Record) -> Result<(), Error> {
        (**self).create(record).await
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        (**self).load(id, now).await
    }
    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        (**self).update(record, now).await
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
}
