//! The store conformance suite (feature `testing`).
//!
//! One function, [`run`], takes a factory of fresh stores and runs every case against it, so
//! each backend's test is a few lines:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use cloakroom::{conformance, MemoryStore};
//!
//! // In a backend's tests/tests.rs this is a `#[tokio::test(flavor = "multi_thread")]`.
//! conformance::run(|| async { MemoryStore::new() }).await;
//! # }
//! ```
//!
//! Every case gets a store of its own from the factory. [`run`] runs all the cases, then
//! panics with the name and message of each one that failed. It must be awaited inside a
//! multi-threaded tokio runtime: the race case spawns tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::id::{IdHash, SessionId};
use crate::policy::Policy;
use crate::record::{Device, Record, Value};
use crate::store::{Applied, Changes, Stats, Store};
use crate::store::{Error, ErrorKind};

/// A store under test: a [`Store`] plus the hooks the suite needs to reach behind it.
///
/// Implement it beside the store (behind the store crate's own `testing` feature), or, from
/// a test crate, wrap the store in [`Corruptible`] with a closure.
#[async_trait]
pub trait ConformanceTarget: Store {
    /// Overwrites the stored bytes of the record `id` (which the suite has just created)
    /// with bytes that do not decode, so the next read of it meets garbage. A byte store
    /// writes e.g. `b"\x01not messagepack"` in place of
    /// [`Record::encode`](crate::Record::encode)'s output, keeping its index columns (user,
    /// expiry) as they were.
    ///
    /// # Errors
    /// Whatever the backend reports.
    async fn inject_corrupt(&self, id: &IdHash) -> Result<(), Error>;
}

/// A store plus a corruption hook given as a closure: a [`ConformanceTarget`] for stores
/// defined in another crate, whose tests cannot implement the trait for them (the orphan
/// rule) but know where the bytes live.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// use std::sync::Arc;
/// use cloakroom::conformance::{self, Corruptible, ConformanceTarget};
/// use cloakroom::store::{Error, ErrorKind};
/// use cloakroom::{IdHash, MemoryStore};
///
/// // A file store's test would overwrite `<dir>/<id.to_hex()>` here; a SQLite store's
/// // would `UPDATE sessions SET record = x'00' WHERE id = ?`.
/// let target = Corruptible::new(MemoryStore::new(), |id: IdHash| async move {
///     let _ = id;
///     Err::<(), _>(Error::new(ErrorKind::InvalidInput, "not supported in this example"))
/// });
/// assert!(target.inject_corrupt(&IdHash::from_bytes([0; 32])).await.is_err());
/// # }
/// ```
pub struct Corruptible<S, F> {
    store: S,
    corrupt: F,
}

impl<S, F> Corruptible<S, F> {
    /// Wraps `store`; `corrupt(id_hash)` must make the stored record of `id_hash` undecodable
    /// (see [`ConformanceTarget::inject_corrupt`]).
    pub fn new(store: S, corrupt: F) -> Self {
        Self { store, corrupt }
    }

    /// The wrapped store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<S, F> std::fmt::Debug for Corruptible<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Corruptible(..)")
    }
}

#[async_trait]
impl<S, F, Fut> Store for Corruptible<S, F>
where
    S: Store,
    F: Fn(IdHash) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    async fn create(&self, record: &Record, now: u64) -> Result<(), Error> {
        self.store.create(record, now).await
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        self.store.load(id, now).await
    }
    async fn update(&self, record: &Record, now: u64) -> Result<u64, Error> {
        self.store.update(record, now).await
    }
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        self.store.apply(id, changes, now, idle_deadline).await
    }
    async fn touch(&self, id: &IdHash, now: u64, idle_deadline: u64) -> Result<(), Error> {
        self.store.touch(id, now, idle_deadline).await
    }
    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        self.store.delete(id).await
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.store.sessions_of(user, now).await
    }
    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, Error> {
        self.store.revoke_user_sessions(user, except).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.store.user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.store.bump_user_epoch(user).await
    }
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        self.store.purge_expired(now, limit).await
    }
    async fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.store.find_by_prefix(prefix, now).await
    }
    async fn stats(&self, now: u64) -> Result<Stats, Error> {
        self.store.stats(now).await
    }
    fn store_name(&self) -> &'static str {
        self.store.store_name()
    }
}

#[async_trait]
impl<S, F, Fut> ConformanceTarget for Corruptible<S, F>
where
    S: Store,
    F: Fn(IdHash) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    async fn inject_corrupt(&self, id: &IdHash) -> Result<(), Error> {
        (self.corrupt)(*id).await
    }
}

/// The time the suite's records are created at (unix seconds).
pub const T0: u64 = 1_700_000_000;
const IDLE: u64 = 30 * 60;
const ABSOLUTE: u64 = 12 * 60 * 60;

/// The names of the cases [`run`] runs, in order.
pub const CASES: &[&str] = &[
    "create_then_load_round_trips",
    "duplicate_create_is_conflict",
    "create_judges_the_existing_record_at_now",
    "load_of_missing_is_none",
    "load_of_expired_is_none",
    "update_returns_next_version_and_stores_every_field",
    "update_with_stale_version_is_conflict_and_writes_nothing",
    "update_of_deleted_or_expired_is_not_found",
    "cas_race_32_tasks_no_lost_increments",
    "apply_sets_and_removes_keys_on_the_latest_data",
    "apply_slides_but_never_shortens_or_passes_the_absolute_deadline",
    "apply_of_missing_deleted_or_expired_is_not_found_and_writes_nothing",
    "apply_keeps_the_user_index",
    "apply_race_64_tasks_every_key_kept",
    "apply_racing_a_delete_never_revives",
    "touch_moves_only_the_idle_deadline",
    "touch_never_passes_the_absolute_deadline",
    "touch_of_missing_or_expired_is_not_found",
    "delete_then_load_is_none",
    "sessions_of_lists_live_sessions_of_that_user_only",
    "update_changing_user_moves_the_index",
    "revoke_user_sessions_except_one",
    "user_epochs_start_at_zero_and_bump",
    "purge_removes_only_expired_in_batches",
    "data_of_64_kib_round_trips",
    "corrupt_record_is_corrupt_error",
    "unicode_and_1_kib_user_ids",
    "find_by_prefix_finds_live_records_only",
    "stats_count_live_and_expired_records",
];

type CaseResult = Result<(), String>;

/// Runs every case of the suite, each against a fresh store from `factory`.
///
/// # Panics
/// After all cases ran, if any failed: the message lists each failed case and why.
pub async fn run<F, Fut, T>(mut factory: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
    T: ConformanceTarget,
{
    let mut failures = Vec::new();
    for &name in CASES {
        let store = Arc::new(factory().await);
        let result = run_case(name, store).await;
        if let Err(message) = result {
            failures.push(format!("conformance case `{name}` failed: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} store conformance cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

async fn run_case<T: ConformanceTarget>(name: &str, s: Arc<T>) -> CaseResult {
    match name {
        "create_then_load_round_trips" => create_then_load(&*s).await,
        "duplicate_create_is_conflict" => duplicate_create(&*s).await,
        "create_judges_the_existing_record_at_now" => create_at_now(&*s).await,
        "load_of_missing_is_none" => load_missing(&*s).await,
        "load_of_expired_is_none" => load_expired(&*s).await,
        "update_returns_next_version_and_stores_every_field" => update_ok(&*s).await,
        "update_with_stale_version_is_conflict_and_writes_nothing" => update_stale(&*s).await,
        "update_of_deleted_or_expired_is_not_found" => update_gone(&*s).await,
        "cas_race_32_tasks_no_lost_increments" => cas_race(s).await,
        "apply_sets_and_removes_keys_on_the_latest_data" => apply_ok(&*s).await,
        "apply_slides_but_never_shortens_or_passes_the_absolute_deadline" => {
            apply_slides(&*s).await
        }
        "apply_of_missing_deleted_or_expired_is_not_found_and_writes_nothing" => {
            apply_gone(&*s).await
        }
        "apply_keeps_the_user_index" => apply_index(&*s).await,
        "apply_race_64_tasks_every_key_kept" => apply_race(s).await,
        "apply_racing_a_delete_never_revives" => apply_delete_race(s).await,
        "touch_moves_only_the_idle_deadline" => touch_moves_idle(&*s).await,
        "touch_never_passes_the_absolute_deadline" => touch_capped(&*s).await,
        "touch_of_missing_or_expired_is_not_found" => touch_gone(&*s).await,
        "delete_then_load_is_none" => delete_then_load(&*s).await,
        "sessions_of_lists_live_sessions_of_that_user_only" => sessions_of(&*s).await,
        "update_changing_user_moves_the_index" => user_change(&*s).await,
        "revoke_user_sessions_except_one" => revoke_except(&*s).await,
        "user_epochs_start_at_zero_and_bump" => epochs(&*s).await,
        "purge_removes_only_expired_in_batches" => purge(&*s).await,
        "data_of_64_kib_round_trips" => big_data(&*s).await,
        "corrupt_record_is_corrupt_error" => corrupt(&*s).await,
        "unicode_and_1_kib_user_ids" => unicode_users(&*s).await,
        "find_by_prefix_finds_live_records_only" => find_by_prefix(&*s).await,
        "stats_count_live_and_expired_records" => stats(&*s).await,
        other => Err(format!("unknown case {other}")),
    }
}

// ---- helpers ----

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn ok<V>(what: &str, r: Result<V, Error>) -> Result<V, String> {
    r.map_err(|e| format!("{what}: unexpected error {:?}: {}", e.kind(), chain(&e)))
}

fn chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

fn expect_kind<V: std::fmt::Debug>(what: &str, r: Result<V, Error>, kind: ErrorKind) -> CaseResult {
    match r {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(format!(
            "{what}: expected {kind:?}, got {:?}: {}",
            e.kind(),
            chain(&e)
        )),
        Ok(v) => Err(format!("{what}: expected {kind:?}, got Ok({v:?})")),
    }
}

fn fresh() -> Record {
    let id = SessionId::generate().expect("OS random number generator");
    Record::new(id.hash(), T0, &Policy::default())
}

fn with_user(user: &str) -> Record {
    let mut r = fresh();
    r.user_id = Some(user.to_owned());
    r
}

async fn must_load<S: Store + ?Sized>(s: &S, id: &IdHash, now: u64) -> Result<Record, String> {
    ok("load", s.load(id, now).await)?
        .ok_or_else(|| format!("load of {id} at {now}: record missing"))
}

fn same<V: PartialEq + std::fmt::Debug>(what: impl Display, got: V, want: V) -> CaseResult {
    ensure!(got == want, "{what}: got {got:?}, want {want:?}");
    Ok(())
}

/// `result` is `Ok(want)`; `what` names the check.
fn returns<V: PartialEq + std::fmt::Debug>(
    what: &str,
    result: Result<V, Error>,
    want: V,
) -> CaseResult {
    same(what, ok(what, result)?, want)
}

/// `r` as a request at `now` leaves it: last seen at `now`, idle deadline a full idle window on.
fn slide(r: &mut Record, now: u64) {
    r.last_seen = now;
    r.idle_deadline = now + IDLE;
}

/// Lists `user`'s sessions at `now`, which must be exactly `want` (by id hash); the records.
async fn sessions_are<S: Store + ?Sized>(
    s: &S,
    what: &str,
    user: &str,
    now: u64,
    want: BTreeSet<IdHash>,
) -> Result<Vec<Record>, String> {
    let listed = ok("sessions_of", s.sessions_of(user, now).await)?;
    same(what, ids(&listed), want)?;
    Ok(listed)
}

/// Runs `task(store, t)` for every `t` in `0..tasks`, all at once, each on its own tokio task,
/// and gathers the versions they returned, in task order.
async fn race<S, F, Fut>(s: &Arc<S>, tasks: u64, task: F) -> Result<Vec<u64>, String>
where
    S: Store,
    F: Fn(Arc<S>, u64) -> Fut,
    Fut: Future<Output = Result<Vec<u64>, String>> + Send + 'static,
{
    let handles: Vec<_> = (0..tasks)
        .map(|t| tokio::spawn(task(Arc::clone(s), t)))
        .collect();
    let mut versions = Vec::new();
    for h in handles {
        let won = h.await.map_err(|e| format!("task panicked: {e}"))??;
        versions.extend(won);
    }
    Ok(versions)
}

fn ids(records: &[Record]) -> BTreeSet<IdHash> {
    records.iter().map(|r| r.id_hash).collect()
}

// ---- cases, one module per area of the contract ----

mod admin;
mod apply;
mod data;
mod lifecycle;
mod touch;
mod users;

use admin::*;
use apply::*;
use data::*;
use lifecycle::*;
use touch::*;
use users::*;
