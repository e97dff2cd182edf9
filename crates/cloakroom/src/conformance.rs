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

use crate::error::{Error, ErrorKind};
use crate::id::{IdHash, SessionId};
use crate::policy::Policy;
use crate::record::{Device, Record, Value};
use crate::store::{Applied, Changes, Stats, Store};

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
/// use cloakroom::{Error, ErrorKind, IdHash, MemoryStore};
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

/// Waits for every racing task and gathers the versions they returned, in task order.
async fn versions_of(
    handles: Vec<tokio::task::JoinHandle<Result<Vec<u64>, String>>>,
) -> Result<Vec<u64>, String> {
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

// ---- cases ----

async fn create_then_load<S: Store>(s: &S) -> CaseResult {
    let mut r = with_user("alice");
    r.user_epoch = 3;
    r.data.insert("n".into(), Value::from(1));
    r.data.insert("s".into(), Value::from("text"));
    r.data.insert("b".into(), Value::Binary(vec![0, 255, 7]));
    r.data.insert(
        "m".into(),
        Value::Map(vec![(
            Value::from("k"),
            Value::Array(vec![Value::Nil, Value::from(true)]),
        )]),
    );
    r.device = Device::new()
        .with_user_agent("Mozilla/5.0")
        .with_label("laptop")
        .with_ip("2001:db8::1");
    ok("create", s.create(&r, r.last_seen).await)?;
    let back = must_load(s, &r.id_hash, T0 + 1).await?;
    same("loaded record", &back, &r)?;
    same("version of a new record", back.version, 1)
}

async fn duplicate_create<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("first create", s.create(&r, r.last_seen).await)?;
    let mut other = r.clone();
    other.data.insert("x".into(), Value::from(1));
    expect_kind(
        "second create of one id",
        s.create(&other, other.last_seen).await,
        ErrorKind::Conflict,
    )?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("record after the refused create", &back, &r)
}

/// A create is judged at the `now` it is given, not at the new record's times: a record
/// live at `now` is a conflict even when the new record starts after the old one expires.
async fn create_at_now<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("first create", s.create(&r, T0).await)?;
    let later = T0 + IDLE + 5;
    let mut other = Record::new(r.id_hash, later, &Policy::default());
    other.data.insert("x".into(), Value::from(1));
    expect_kind(
        "create of a live id with a record that starts after it expires",
        s.create(&other, T0 + 10).await,
        ErrorKind::Conflict,
    )?;
    let back = must_load(s, &r.id_hash, T0 + 10).await?;
    same("record after the refused create", &back, &r)
}

async fn load_missing<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    let got = ok("load", s.load(&r.id_hash, T0).await)?;
    ensure!(got.is_none(), "load of a never-created id returned {got:?}");
    Ok(())
}

async fn load_expired<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + IDLE - 1).await)?.is_some(),
        "record gone one second before its idle deadline"
    );
    let got = ok("load", s.load(&r.id_hash, T0 + IDLE).await)?;
    ensure!(got.is_none(), "load at the idle deadline returned a record");
    // Past the absolute deadline, even with a far idle deadline.
    let mut r2 = fresh();
    r2.idle_deadline = r2.absolute_deadline + 1000;
    ok("create", s.create(&r2, r2.last_seen).await)?;
    ensure!(
        ok("load", s.load(&r2.id_hash, T0 + ABSOLUTE - 1).await)?.is_some(),
        "record gone before its absolute deadline"
    );
    let got = ok("load", s.load(&r2.id_hash, T0 + ABSOLUTE).await)?;
    ensure!(
        got.is_none(),
        "load at the absolute deadline returned a record"
    );
    Ok(())
}

async fn update_ok<S: Store>(s: &S) -> CaseResult {
    let r = with_user("bob");
    ok("create", s.create(&r, r.last_seen).await)?;
    let mut next = must_load(s, &r.id_hash, T0 + 10).await?;
    next.data.insert(
        "cart".into(),
        Value::from(vec![Value::from(1), Value::from(2)]),
    );
    next.last_seen = T0 + 10;
    next.idle_deadline = T0 + 10 + IDLE;
    next.user_epoch = 4;
    next.device.label = Some("phone".into());
    let v = ok("update", s.update(&next, T0 + 10).await)?;
    same("version returned by update", v, 2)?;
    let back = must_load(s, &r.id_hash, T0 + 11).await?;
    let mut want = next.clone();
    want.version = 2;
    same("record after update", &back, &want)?;
    let v3 = ok("second update", s.update(&back, T0 + 12).await)?;
    same("version after second update", v3, 3)
}

async fn update_stale<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    let mut a = r.clone();
    a.data.insert("k".into(), Value::from("a"));
    ok("first update", s.update(&a, T0).await)?;
    let mut b = r.clone(); // still version 1
    b.data.insert("k".into(), Value::from("b"));
    expect_kind(
        "update with a stale version",
        s.update(&b, T0).await,
        ErrorKind::Conflict,
    )?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("version after the refused update", back.version, 2)?;
    same(
        "data after the refused update",
        back.data.get("k"),
        Some(&Value::from("a")),
    )?;
    let mut future = back.clone();
    future.version = 99;
    expect_kind(
        "update with a future version",
        s.update(&future, T0).await,
        ErrorKind::Conflict,
    )
}

async fn update_gone<S: Store>(s: &S) -> CaseResult {
    let never = fresh();
    expect_kind(
        "update of a never-created id",
        s.update(&never, T0).await,
        ErrorKind::NotFound,
    )?;
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    ok("delete", s.delete(&r.id_hash).await)?;
    expect_kind(
        "update after delete",
        s.update(&r, T0).await,
        ErrorKind::NotFound,
    )?;
    let got = ok("load", s.load(&r.id_hash, T0).await)?;
    ensure!(
        got.is_none(),
        "an update after delete brought the record back"
    );
    let e = fresh();
    ok("create", s.create(&e, e.last_seen).await)?;
    expect_kind(
        "update of an expired record",
        s.update(&e, T0 + IDLE).await,
        ErrorKind::NotFound,
    )
}

async fn cas_race<S: Store>(s: Arc<S>) -> CaseResult {
    const TASKS: u64 = 32;
    const EACH: u64 = 8;
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    let id = r.id_hash;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for _ in 0..EACH {
                loop {
                    let mut cur = match s.load(&id, T0).await {
                        Ok(Some(cur)) => cur,
                        Ok(None) => return Err("record vanished during the race".to_owned()),
                        Err(e) => return Err(format!("load: {e}")),
                    };
                    // Let the other tasks read the same version before we write: contention
                    // is the point of this case, even against a store that answers at once.
                    tokio::task::yield_now().await;
                    let n = cur.data.get("n").and_then(Value::as_u64).unwrap_or(0);
                    cur.data.insert("n".into(), Value::from(n + 1));
                    match s.update(&cur, T0).await {
                        Ok(v) => {
                            won.push(v);
                            break;
                        }
                        Err(e) if e.kind() == ErrorKind::Conflict => tokio::task::yield_now().await,
                        Err(e) => return Err(format!("update: {:?} {e}", e.kind())),
                    }
                }
            }
            Ok(won)
        }));
    }
    let versions = versions_of(handles).await?;
    let total = TASKS * EACH;
    let unique: BTreeSet<u64> = versions.iter().copied().collect();
    same("successful updates", versions.len() as u64, total)?;
    same(
        "distinct winning versions (one winner per version)",
        unique.len() as u64,
        total,
    )?;
    same(
        "winning versions",
        unique,
        (2..=total + 1).collect::<BTreeSet<u64>>(),
    )?;
    let back = must_load(&*s, &id, T0).await?;
    same(
        "counter after the race (lost increments?)",
        back.data.get("n").and_then(Value::as_u64),
        Some(total),
    )?;
    same("version after the race", back.version, total + 1)
}

fn changes(sets: &[(&str, Value)], removes: &[&str]) -> Changes {
    let mut c = Changes::new();
    for (k, v) in sets {
        c.set(*k, v.clone());
    }
    for k in removes {
        c.remove(*k);
    }
    c
}

async fn apply_ok<S: Store>(s: &S) -> CaseResult {
    let mut r = with_user("mallory");
    r.user_epoch = 7;
    r.data.insert("a".into(), Value::from(1));
    r.data.insert("b".into(), Value::from("two"));
    r.data.insert("keep".into(), Value::Binary(vec![9, 9]));
    r.device = Device::new().with_label("tablet");
    ok("create", s.create(&r, r.last_seen).await)?;
    let c = changes(
        &[
            ("a", Value::from(10)),
            ("c", Value::Array(vec![Value::from(true), Value::Nil])),
        ],
        &["b", "never-there"],
    );
    let got = ok(
        "apply",
        s.apply(&r.id_hash, &c, T0 + 10, T0 + 10 + IDLE).await,
    )?;
    same("apply's answer", got, Applied::new(2, T0 + 10 + IDLE))?;
    let back = must_load(s, &r.id_hash, T0 + 11).await?;
    let mut want = r.clone();
    want.data.insert("a".into(), Value::from(10));
    want.data.remove("b");
    want.data.insert(
        "c".into(),
        Value::Array(vec![Value::from(true), Value::Nil]),
    );
    want.version = 2;
    want.last_seen = T0 + 10;
    want.idle_deadline = T0 + 10 + IDLE;
    same(
        "record after apply (only data, version, last_seen, idle deadline change)",
        &back,
        &want,
    )?;
    // Apply merges onto what is stored now, whoever wrote it: an update in between is kept.
    let mut other = back.clone();
    other.data.insert("d".into(), Value::from("from update"));
    same(
        "update between applies",
        ok("update", s.update(&other, T0 + 12).await)?,
        3,
    )?;
    let got = ok(
        "second apply",
        s.apply(
            &r.id_hash,
            &changes(&[("e", Value::from(5))], &["a"]),
            T0 + 13,
            T0 + 13 + IDLE,
        )
        .await,
    )?;
    same("version after the second apply", got.version, 4)?;
    let back = must_load(s, &r.id_hash, T0 + 14).await?;
    let keys: Vec<&str> = back.data.keys().map(String::as_str).collect();
    same(
        "keys after update and apply",
        keys,
        vec!["c", "d", "e", "keep"],
    )?;
    // A compare-and-swap based on the version apply returned wins.
    same(
        "update at the version apply returned",
        ok("update", s.update(&back, T0 + 15).await)?,
        5,
    )?;
    // An empty change still counts as a write: version and deadline move.
    let got = ok(
        "empty apply",
        s.apply(&r.id_hash, &Changes::new(), T0 + 16, T0 + 16 + IDLE)
            .await,
    )?;
    same("empty apply's answer", got, Applied::new(6, T0 + 16 + IDLE))
}

async fn apply_slides<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    ok(
        "touch",
        s.touch(&r.id_hash, T0 + 600, T0 + 600 + IDLE).await,
    )?;
    // A request that started earlier commits later, asking for an earlier deadline.
    let got = ok(
        "apply asking for an earlier idle deadline",
        s.apply(
            &r.id_hash,
            &changes(&[("k", Value::from(1))], &[]),
            T0 + 100,
            T0 + 100 + IDLE,
        )
        .await,
    )?;
    same(
        "idle deadline apply returned",
        got.idle_deadline,
        T0 + 600 + IDLE,
    )?;
    let back = must_load(s, &r.id_hash, T0 + 601).await?;
    same(
        "idle deadline (never shortened)",
        back.idle_deadline,
        T0 + 600 + IDLE,
    )?;
    same("last_seen (never moved back)", back.last_seen, T0 + 600)?;
    same("data", back.data.get("k"), Some(&Value::from(1)))?;
    // Near the end: capped at the absolute deadline.
    let mut r = fresh();
    r.idle_deadline = r.absolute_deadline - 100;
    ok("create", s.create(&r, r.last_seen).await)?;
    let now = r.absolute_deadline - 200;
    let got = ok(
        "apply asking past the absolute deadline",
        s.apply(
            &r.id_hash,
            &changes(&[("k", Value::from(2))], &[]),
            now,
            now + IDLE,
        )
        .await,
    )?;
    same(
        "idle deadline asked past the absolute one",
        got.idle_deadline,
        r.absolute_deadline,
    )?;
    capped_at_absolute(s, &r, now, "apply").await
}

async fn apply_gone<S: Store>(s: &S) -> CaseResult {
    let c = changes(&[("k", Value::from("late"))], &[]);
    let never = fresh();
    expect_kind(
        "apply to a never-created id",
        s.apply(&never.id_hash, &c, T0, T0 + IDLE).await,
        ErrorKind::NotFound,
    )?;
    ensure!(
        ok("load", s.load(&never.id_hash, T0).await)?.is_none(),
        "apply created a record"
    );
    let r = with_user("nina");
    ok("create", s.create(&r, r.last_seen).await)?;
    ok("delete", s.delete(&r.id_hash).await)?;
    expect_kind(
        "apply after delete",
        s.apply(&r.id_hash, &c, T0 + 1, T0 + 1 + IDLE).await,
        ErrorKind::NotFound,
    )?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + 2).await)?.is_none(),
        "apply brought a deleted record back"
    );
    ensure!(
        ok("sessions_of", s.sessions_of("nina", T0 + 2).await)?.is_empty(),
        "apply brought a deleted record back into its user's list"
    );
    // Expired at the idle deadline: not found, and nothing written (the record as it was
    // still reads back at an earlier time, with the old deadline).
    let idle = fresh();
    ok("create", s.create(&idle, idle.last_seen).await)?;
    expect_kind(
        "apply at the idle deadline",
        s.apply(&idle.id_hash, &c, T0 + IDLE, T0 + 2 * IDLE).await,
        ErrorKind::NotFound,
    )?;
    let back = must_load(s, &idle.id_hash, T0 + IDLE - 1).await?;
    same("record after apply to an expired one", &back, &idle)?;
    // Past the absolute deadline, with a far idle deadline.
    let mut abs = fresh();
    abs.idle_deadline = abs.absolute_deadline + 1000;
    ok("create", s.create(&abs, abs.last_seen).await)?;
    expect_kind(
        "apply at the absolute deadline",
        s.apply(&abs.id_hash, &c, T0 + ABSOLUTE, T0 + ABSOLUTE + IDLE)
            .await,
        ErrorKind::NotFound,
    )?;
    ensure!(
        ok("load", s.load(&abs.id_hash, T0 + ABSOLUTE).await)?.is_none(),
        "apply revived a record past its absolute deadline"
    );
    let back = must_load(s, &abs.id_hash, T0 + ABSOLUTE - 1).await?;
    same("record after apply past the absolute deadline", &back, &abs)
}

async fn apply_index<S: Store>(s: &S) -> CaseResult {
    let r = with_user("olga");
    let other = with_user("olga");
    let anon = fresh();
    for rec in [&r, &other, &anon] {
        ok("create", s.create(rec, rec.last_seen).await)?;
    }
    for (i, rec) in [&r, &anon].into_iter().enumerate() {
        let now = T0 + 100 * (i as u64 + 1);
        ok(
            "apply",
            s.apply(
                &rec.id_hash,
                &changes(&[("page", Value::from(i as u64))], &[]),
                now,
                now + IDLE,
            )
            .await,
        )?;
    }
    // Listed at a time only the slid deadline reaches: the index knows the new expiry.
    let later = T0 + IDLE + 50;
    let listed = ok("sessions_of", s.sessions_of("olga", later).await)?;
    same(
        "olga's sessions after apply (the other one expired)",
        ids(&listed),
        BTreeSet::from([r.id_hash]),
    )?;
    same(
        "listed data",
        listed[0].data.get("page"),
        Some(&Value::from(0u64)),
    )?;
    same("listed user", listed[0].user_id.as_deref(), Some("olga"))?;
    // (The expired one may or may not still be indexed: stores prune dead entries as they
    // list them.)
    let revoked = ok("revoke", s.revoke_user_sessions("olga", None).await)?;
    ensure!(
        (1..=2).contains(&revoked),
        "revoke after apply revoked {revoked}"
    );
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + 200).await)?.is_none(),
        "revoke missed a session that apply wrote"
    );
    ensure!(
        ok("load", s.load(&anon.id_hash, T0 + 200).await)?.is_some(),
        "revoke removed an anonymous session"
    );
    Ok(())
}

async fn apply_race<S: Store>(s: Arc<S>) -> CaseResult {
    const TASKS: u64 = 64;
    const EACH: u64 = 4;
    let r = with_user("pat");
    ok("create", s.create(&r, r.last_seen).await)?;
    let id = r.id_hash;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = Arc::clone(&s);
        handles.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..EACH {
                let mut c = Changes::new();
                c.set(format!("t{t}.{i}"), Value::from(t * 100 + i));
                if i > 0 {
                    // Each task also removes the key it set before and sets it again under
                    // another name at the end: removes race with sets of other keys.
                    c.remove(format!("t{t}.{}", i - 1));
                    c.set(format!("done{t}.{}", i - 1), Value::from(true));
                }
                let now = T0 + i;
                match s.apply(&id, &c, now, now + IDLE).await {
                    Ok(applied) => versions.push(applied.version),
                    Err(e) => {
                        return Err(format!(
                            "apply {t}.{i}: {:?} {e} (an overlapping apply must never fail)",
                            e.kind()
                        ))
                    }
                }
                tokio::task::yield_now().await;
            }
            Ok(versions)
        }));
    }
    let versions = versions_of(handles).await?;
    let total = TASKS * EACH;
    let unique: BTreeSet<u64> = versions.iter().copied().collect();
    same(
        "versions returned by the applies (one per apply)",
        unique,
        (2..=total + 1).collect::<BTreeSet<u64>>(),
    )?;
    let back = must_load(&*s, &id, T0 + EACH).await?;
    let mut want = BTreeSet::new();
    for t in 0..TASKS {
        want.insert(format!("t{t}.{}", EACH - 1));
        for i in 0..EACH - 1 {
            want.insert(format!("done{t}.{i}"));
        }
    }
    let got: BTreeSet<String> = back.data.keys().cloned().collect();
    let lost: Vec<&String> = want.difference(&got).take(5).collect();
    let extra: Vec<&String> = got.difference(&want).take(5).collect();
    ensure!(
        lost.is_empty() && extra.is_empty(),
        "keys after 64 overlapping writers: {} lost (e.g. {lost:?}), {} not removed (e.g. {extra:?})",
        want.difference(&got).count(),
        got.difference(&want).count()
    );
    same("version after the race", back.version, total + 1)?;
    same("user after the race", back.user_id.as_deref(), Some("pat"))?;
    same(
        "pat's sessions after the race",
        ids(&ok("sessions_of", s.sessions_of("pat", T0 + EACH).await)?),
        BTreeSet::from([id]),
    )
}

async fn apply_delete_race<S: Store>(s: Arc<S>) -> CaseResult {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const ROUNDS: u64 = 8;
    const TASKS: u64 = 16;
    for round in 0..ROUNDS {
        let r = with_user("quinn");
        ok("create", s.create(&r, r.last_seen).await)?;
        let id = r.id_hash;
        let deleted = Arc::new(AtomicBool::new(false));
        let applied = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let (s, deleted, applied) = (Arc::clone(&s), deleted.clone(), applied.clone());
            handles.push(tokio::spawn(async move {
                for i in 0..64u64 {
                    let after_delete = deleted.load(Ordering::SeqCst);
                    let key = format!("k{t}.{i}");
                    let c = changes(&[(key.as_str(), Value::from(i))], &[]);
                    match s.apply(&id, &c, T0 + 1, T0 + 1 + IDLE).await {
                        Ok(_) if after_delete => {
                            return Err(
                                "an apply begun after the delete returned succeeded".to_owned()
                            )
                        }
                        Ok(_) => {
                            applied.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                        Err(e) => return Err(format!("apply: {:?} {e}", e.kind())),
                    }
                    tokio::task::yield_now().await;
                }
                Ok(())
            }));
        }
        // Delete while the applies run.
        while applied.load(Ordering::SeqCst) < TASKS && !handles.iter().all(|h| h.is_finished()) {
            tokio::task::yield_now().await;
        }
        same(
            "delete during the applies",
            ok("delete", s.delete(&id).await)?,
            true,
        )?;
        deleted.store(true, Ordering::SeqCst);
        for h in handles {
            h.await.map_err(|e| format!("task panicked: {e}"))??;
        }
        ensure!(
            ok("load", s.load(&id, T0 + 2).await)?.is_none(),
            "round {round}: an apply racing the delete brought the session back"
        );
        ensure!(
            ok("sessions_of", s.sessions_of("quinn", T0 + 2).await)?.is_empty(),
            "round {round}: an apply racing the delete put the session back in its user's list"
        );
    }
    Ok(())
}

async fn touch_moves_idle<S: Store>(s: &S) -> CaseResult {
    let mut r = with_user("carol");
    r.data.insert("k".into(), Value::from(1));
    ok("create", s.create(&r, r.last_seen).await)?;
    ok(
        "touch",
        s.touch(&r.id_hash, T0 + 600, T0 + 600 + IDLE).await,
    )?;
    let back = must_load(s, &r.id_hash, T0 + 601).await?;
    let mut want = r.clone();
    want.last_seen = T0 + 600;
    want.idle_deadline = T0 + 600 + IDLE;
    same(
        "record after touch (only last_seen and idle deadline may change)",
        &back,
        &want,
    )?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0 + IDLE + 10).await)?.is_some(),
        "touched record died at its old idle deadline"
    );
    // Touch does not change the version, so a CAS based on the pre-touch read still wins.
    let mut next = r.clone();
    next.data.insert("k".into(), Value::from(2));
    same(
        "update after touch",
        ok("update after touch", s.update(&next, T0 + 601).await)?,
        2,
    )
}

async fn touch_capped<S: Store>(s: &S) -> CaseResult {
    let mut r = fresh();
    r.idle_deadline = r.absolute_deadline - 100;
    ok("create", s.create(&r, r.last_seen).await)?;
    let now = r.absolute_deadline - 200;
    ok(
        "touch asking past the absolute deadline",
        s.touch(&r.id_hash, now, now + IDLE).await,
    )?;
    capped_at_absolute(s, &r, now, "touch").await
}

/// After `op` (apply or touch) at `now` asked to slide `r` past its absolute deadline: the
/// stored idle deadline is the absolute one, the absolute deadline is kept, `last_seen` is
/// `now`, and the record is gone once the absolute deadline comes.
async fn capped_at_absolute<S: Store>(s: &S, r: &Record, now: u64, op: &str) -> CaseResult {
    let back = must_load(s, &r.id_hash, now + 1).await?;
    same(
        format_args!("stored idle deadline after {op}"),
        back.idle_deadline,
        r.absolute_deadline,
    )?;
    same(
        format_args!("absolute deadline after {op}"),
        back.absolute_deadline,
        r.absolute_deadline,
    )?;
    same(format_args!("last_seen after {op}"), back.last_seen, now)?;
    let got = ok("load", s.load(&r.id_hash, r.absolute_deadline).await)?;
    ensure!(
        got.is_none(),
        "{op} kept a record alive past its absolute deadline"
    );
    Ok(())
}

async fn touch_gone<S: Store>(s: &S) -> CaseResult {
    let never = fresh();
    expect_kind(
        "touch of a never-created id",
        s.touch(&never.id_hash, T0, T0 + IDLE).await,
        ErrorKind::NotFound,
    )?;
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    expect_kind(
        "touch of an expired record",
        s.touch(&r.id_hash, T0 + IDLE, T0 + 2 * IDLE).await,
        ErrorKind::NotFound,
    )?;
    let got = ok("load", s.load(&r.id_hash, T0 + IDLE + 1).await)?;
    ensure!(got.is_none(), "touch revived an expired record");
    Ok(())
}

async fn delete_then_load<S: Store>(s: &S) -> CaseResult {
    let r = with_user("dave");
    ok("create", s.create(&r, r.last_seen).await)?;
    same(
        "delete of an existing record",
        ok("delete", s.delete(&r.id_hash).await)?,
        true,
    )?;
    let got = ok("load", s.load(&r.id_hash, T0).await)?;
    ensure!(got.is_none(), "record still loads after delete");
    same(
        "delete again",
        ok("delete", s.delete(&r.id_hash).await)?,
        false,
    )?;
    let listed = ok("sessions_of", s.sessions_of("dave", T0).await)?;
    ensure!(
        listed.is_empty(),
        "deleted record still listed for its user"
    );
    // The id can be used again after delete.
    ok("create after delete", s.create(&r, r.last_seen).await)
}

async fn sessions_of<S: Store>(s: &S) -> CaseResult {
    let a1 = with_user("erin");
    let a2 = with_user("erin");
    let mut expired = with_user("erin");
    expired.idle_deadline = T0 + 10;
    let b = with_user("erin2");
    let anon = fresh();
    for r in [&a1, &a2, &expired, &b, &anon] {
        ok("create", s.create(r, r.last_seen).await)?;
    }
    let got = ok("sessions_of", s.sessions_of("erin", T0 + 20).await)?;
    same(
        "ids listed for erin",
        ids(&got),
        BTreeSet::from([a1.id_hash, a2.id_hash]),
    )?;
    for rec in &got {
        let want = if rec.id_hash == a1.id_hash { &a1 } else { &a2 };
        same("listed record", rec, want)?;
    }
    let none = ok("sessions_of", s.sessions_of("nobody", T0).await)?;
    ensure!(
        none.is_empty(),
        "sessions_of an unknown user returned {none:?}"
    );
    let prefix = ok("sessions_of", s.sessions_of("eri", T0).await)?;
    ensure!(prefix.is_empty(), "sessions_of matched a user id prefix");
    Ok(())
}

async fn user_change<S: Store>(s: &S) -> CaseResult {
    let r = fresh();
    ok("create", s.create(&r, r.last_seen).await)?;
    let mut logged_in = r.clone();
    logged_in.user_id = Some("frank".into());
    ok("update setting the user", s.update(&logged_in, T0).await)?;
    let got = ok("sessions_of", s.sessions_of("frank", T0).await)?;
    same("frank's sessions", ids(&got), BTreeSet::from([r.id_hash]))?;
    let mut moved = must_load(s, &r.id_hash, T0).await?;
    moved.user_id = Some("grace".into());
    ok("update changing the user", s.update(&moved, T0).await)?;
    let frank = ok("sessions_of", s.sessions_of("frank", T0).await)?;
    ensure!(
        frank.is_empty(),
        "old user still lists the session after a user change"
    );
    let grace = ok("sessions_of", s.sessions_of("grace", T0).await)?;
    same("grace's sessions", ids(&grace), BTreeSet::from([r.id_hash]))?;
    same(
        "revoke of the old user",
        ok("revoke", s.revoke_user_sessions("frank", None).await)?,
        0,
    )?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0).await)?.is_some(),
        "revoking the old user deleted the session"
    );
    Ok(())
}

async fn revoke_except<S: Store>(s: &S) -> CaseResult {
    let keep = with_user("heidi");
    let others: Vec<Record> = (0..4).map(|_| with_user("heidi")).collect();
    let bystander = with_user("ivan");
    ok("create", s.create(&keep, keep.last_seen).await)?;
    for r in &others {
        ok("create", s.create(r, r.last_seen).await)?;
    }
    ok("create", s.create(&bystander, bystander.last_seen).await)?;
    let n = ok(
        "revoke except",
        s.revoke_user_sessions("heidi", Some(&keep.id_hash)).await,
    )?;
    same("sessions revoked", n, 4)?;
    let left = ok("sessions_of", s.sessions_of("heidi", T0).await)?;
    same(
        "heidi's sessions after revoke-except",
        ids(&left),
        BTreeSet::from([keep.id_hash]),
    )?;
    for r in &others {
        ensure!(
            ok("load", s.load(&r.id_hash, T0).await)?.is_none(),
            "a revoked session still loads"
        );
    }
    ensure!(
        ok("load", s.load(&bystander.id_hash, T0).await)?.is_some(),
        "another user's session was revoked"
    );
    let n = ok("revoke all", s.revoke_user_sessions("heidi", None).await)?;
    same("sessions revoked by revoke-all", n, 1)?;
    ensure!(
        ok("load", s.load(&keep.id_hash, T0).await)?.is_none(),
        "revoke-all left the kept session"
    );
    same(
        "revoke of a user with none",
        ok("revoke", s.revoke_user_sessions("heidi", None).await)?,
        0,
    )
}

async fn epochs<S: Store>(s: &S) -> CaseResult {
    same(
        "epoch of a new user",
        ok("user_epoch", s.user_epoch("judy").await)?,
        0,
    )?;
    same(
        "first bump",
        ok("bump", s.bump_user_epoch("judy").await)?,
        1,
    )?;
    same(
        "second bump",
        ok("bump", s.bump_user_epoch("judy").await)?,
        2,
    )?;
    same(
        "epoch read back",
        ok("user_epoch", s.user_epoch("judy").await)?,
        2,
    )?;
    same(
        "another user's epoch",
        ok("user_epoch", s.user_epoch("judy2").await)?,
        0,
    )?;
    // Bumping the epoch alone deletes nothing: the session layer revokes separately.
    let r = with_user("judy");
    ok("create", s.create(&r, r.last_seen).await)?;
    ok("bump", s.bump_user_epoch("judy").await)?;
    ensure!(
        ok("load", s.load(&r.id_hash, T0).await)?.is_some(),
        "bumping the epoch deleted a record"
    );
    Ok(())
}

async fn purge<S: Store>(s: &S) -> CaseResult {
    let mut expired = Vec::new();
    for i in 0..25u64 {
        let mut r = with_user("kim");
        r.idle_deadline = T0 + 10 + i;
        ok("create", s.create(&r, r.last_seen).await)?;
        expired.push(r);
    }
    let mut live = Vec::new();
    for _ in 0..5 {
        let r = with_user("kim");
        ok("create", s.create(&r, r.last_seen).await)?;
        live.push(r);
    }
    let now = T0 + 100;
    let mut counts = Vec::new();
    loop {
        let n = ok("purge", s.purge_expired(now, 10).await)?;
        ensure!(n <= 10, "purge with limit 10 removed {n}");
        counts.push(n);
        if n < 10 || counts.len() > 10 {
            break;
        }
    }
    same("purge batch counts", counts, vec![10, 10, 5])?;
    same(
        "purge when nothing is expired",
        ok("purge", s.purge_expired(now, 10).await)?,
        0,
    )?;
    for r in &live {
        ensure!(
            ok("load", s.load(&r.id_hash, now).await)?.is_some(),
            "purge removed a live record"
        );
    }
    let listed = ok("sessions_of", s.sessions_of("kim", now).await)?;
    same("kim's sessions after purge", ids(&listed), ids(&live))?;
    // Purged records are gone from the index too: revoking finds only the live ones.
    same(
        "revoke after purge",
        ok("revoke", s.revoke_user_sessions("kim", None).await)?,
        5,
    )?;
    for r in &expired {
        ensure!(
            ok("load", s.load(&r.id_hash, T0).await)?.is_none(),
            "a purged record loads at an earlier time"
        );
    }
    Ok(())
}

/// Whether the store says it cannot enumerate its records (memcached): then both operator
/// queries must say so, with [`ErrorKind::Unsupported`], and nothing else is checked.
async fn unsupported_admin<S: Store>(s: &S) -> Result<bool, String> {
    let find = s.find_by_prefix("ab", T0).await;
    let stats = s.stats(T0).await;
    fn unsupported<V>(r: &Result<V, Error>) -> bool {
        matches!(r, Err(e) if e.kind() == ErrorKind::Unsupported)
    }
    match (unsupported(&find), unsupported(&stats)) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        _ => Err("find_by_prefix and stats disagree on being Unsupported".into()),
    }
}

async fn find_by_prefix<S: Store>(s: &S) -> CaseResult {
    if unsupported_admin(s).await? {
        return Ok(());
    }
    let live = with_user("ana");
    let other = fresh();
    let mut expired = fresh();
    expired.idle_deadline = T0 + 10;
    for r in [&live, &other, &expired] {
        ok("create", s.create(r, r.last_seen).await)?;
    }
    let now = T0 + 100;
    let hex = live.id_hash.to_hex();
    for len in [64, 8, 1] {
        let found = ok("find_by_prefix", s.find_by_prefix(&hex[..len], now).await)?;
        ensure!(
            found.contains(&live),
            "find_by_prefix({}) misses the live record (got {} records)",
            &hex[..len],
            found.len()
        );
        ensure!(
            found
                .iter()
                .all(|r| r.id_hash.to_hex().starts_with(&hex[..len])),
            "find_by_prefix({}) returned a record with another prefix",
            &hex[..len]
        );
    }
    same(
        "find_by_prefix(full id hash)",
        ok("find_by_prefix", s.find_by_prefix(&hex, now).await)?.len(),
        1,
    )?;
    let gone = expired.id_hash.to_hex();
    same(
        "find_by_prefix of an expired record",
        ok("find_by_prefix", s.find_by_prefix(&gone, now).await)?.len(),
        0,
    )?;
    ok("delete", s.delete(&live.id_hash).await)?;
    same(
        "find_by_prefix of a deleted record",
        ok("find_by_prefix", s.find_by_prefix(&hex, now).await)?.len(),
        0,
    )?;
    for bad in ["", "XY", "0g", &"a".repeat(65)] {
        expect_kind(
            "find_by_prefix of a bad prefix",
            s.find_by_prefix(bad, now).await,
            ErrorKind::InvalidInput,
        )?;
    }
    Ok(())
}

async fn stats<S: Store>(s: &S) -> CaseResult {
    if unsupported_admin(s).await? {
        return Ok(());
    }
    same(
        "stats of an empty store",
        ok("stats", s.stats(T0).await)?.live,
        0,
    )?;
    for i in 0..3u64 {
        let mut r = with_user("bo");
        r.idle_deadline = T0 + 10 + i;
        ok("create", s.create(&r, r.last_seen).await)?;
    }
    for _ in 0..2 {
        ok("create", s.create(&fresh(), T0).await)?;
    }
    let now = T0 + 100;
    let st: Stats = ok("stats", s.stats(now).await)?;
    same("live", st.live, 2)?;
    same("expired, not purged", st.expired_not_purged, 3)?;
    if let Some(bytes) = st.bytes {
        ensure!(bytes > 0, "stats says 5 records take 0 bytes");
    }
    while ok("purge", s.purge_expired(now, 100).await)? == 100 {}
    let st = ok("stats", s.stats(now).await)?;
    same("live after purge", st.live, 2)?;
    same("expired after purge", st.expired_not_purged, 0)?;
    Ok(())
}

async fn big_data<S: Store>(s: &S) -> CaseResult {
    let mut r = fresh();
    let blob: Vec<u8> = (0..64 * 1024).map(|i: u32| (i * 7 + 3) as u8).collect();
    r.data.insert("blob".into(), Value::Binary(blob.clone()));
    r.data
        .insert("text".into(), Value::from("é".repeat(8 * 1024)));
    ok("create", s.create(&r, r.last_seen).await)?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("64 KiB record", &back, &r)?;
    let mut next = back.clone();
    let mut blob2 = blob;
    blob2.reverse();
    next.data.insert("blob".into(), Value::Binary(blob2));
    ok("update of 64 KiB record", s.update(&next, T0).await)?;
    let back = must_load(s, &r.id_hash, T0).await?;
    same("64 KiB data after update", &back.data, &next.data)
}

async fn corrupt<T: ConformanceTarget>(s: &T) -> CaseResult {
    let r = with_user("leo");
    ok("create", s.create(&r, r.last_seen).await)?;
    let fine = with_user("leo");
    ok("create", s.create(&fine, fine.last_seen).await)?;
    ok("inject_corrupt", s.inject_corrupt(&r.id_hash).await)?;
    expect_kind(
        "load of a corrupt record",
        s.load(&r.id_hash, T0).await,
        ErrorKind::Corrupt,
    )?;
    ensure!(
        ok(
            "load of an intact record beside it",
            s.load(&fine.id_hash, T0).await
        )?
        .is_some(),
        "a corrupt record hid another one"
    );
    same(
        "delete of a corrupt record",
        ok("delete", s.delete(&r.id_hash).await)?,
        true,
    )?;
    let got = ok(
        "load after deleting the corrupt record",
        s.load(&r.id_hash, T0).await,
    )?;
    ensure!(got.is_none(), "deleted corrupt record still loads");
    Ok(())
}

async fn unicode_users<S: Store>(s: &S) -> CaseResult {
    let long: String = "ü".repeat(512); // 1 KiB of UTF-8
    let users = [
        "名前@例え.jp".to_owned(),
        "🦀 rustacean".to_owned(),
        "Zoë 'quote\" back\\slash %_ *".to_owned(),
        long.clone(),
        format!("{long}x"),
    ];
    let mut by_user = BTreeMap::new();
    for u in &users {
        let r = with_user(u);
        ok("create", s.create(&r, r.last_seen).await)?;
        by_user.insert(u.clone(), r);
    }
    for (u, r) in &by_user {
        let back = must_load(s, &r.id_hash, T0).await?;
        same(
            format!("user id of {}…", u.chars().take(8).collect::<String>()),
            &back.user_id,
            &r.user_id,
        )?;
        let listed = ok("sessions_of", s.sessions_of(u, T0).await)?;
        same(
            "sessions of a unicode user",
            ids(&listed),
            BTreeSet::from([r.id_hash]),
        )?;
        same(
            "epoch bump of a unicode user",
            ok("bump", s.bump_user_epoch(u).await)?,
            1,
        )?;
    }
    same(
        "revoke of the 1 KiB user",
        ok("revoke", s.revoke_user_sessions(&long, None).await)?,
        1,
    )?;
    let other = &by_user[&format!("{long}x")];
    ensure!(
        ok("load", s.load(&other.id_hash, T0).await)?.is_some(),
        "revoking a 1 KiB user id hit a longer one"
    );
    same(
        "epoch of the longer user",
        ok("user_epoch", s.user_epoch(&format!("{long}x")).await)?,
        1,
    )?;
    Ok(())
}
