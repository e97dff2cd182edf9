//! Integration tests of `cloakroom`: the store conformance suite against the memory store,
//! and the session layer's verbs end to end in every mode.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom::conformance::{self, ConformanceTarget};
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{
    Applied, Changes, Commit, CookieUpdate, CsrfSecret, Device, IdHash, KeyRing, Level,
    ManualClock, MemoryStore, Mode, Record, Session, SessionManager, Store, MAX_COOKIE_LEN,
};
use futures::FutureExt as _;
use proptest::prelude::*;

const T0: u64 = 1_700_000_000;

// ---- the store conformance suite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_conformance() {
    conformance::run(|| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_with_a_corruption_closure_passes_conformance() {
    // How a store defined in another crate runs the suite without implementing
    // ConformanceTarget itself.
    conformance::run(|| async {
        let store = Arc::new(MemoryStore::new());
        let inner = store.clone();
        conformance::Corruptible::new(store, move |id: IdHash| {
            let inner = inner.clone();
            async move { inner.inject_corrupt(&id).await }
        })
    })
    .await;
}

/// What a test store does differently from the memory store it wraps: each hook is given the
/// inner store, and a hook left as it is forwards to it.
#[async_trait]
trait Twist: Send + Sync + 'static {
    async fn create(&self, inner: &MemoryStore, r: &Record, now: u64) -> Result<(), Error> {
        inner.create(r, now).await
    }
    async fn update(&self, inner: &MemoryStore, r: &Record, now: u64) -> Result<u64, Error> {
        inner.update(r, now).await
    }
    async fn apply(
        &self,
        inner: &MemoryStore,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        inner.apply(id, changes, now, idle_deadline).await
    }
    async fn touch(
        &self,
        inner: &MemoryStore,
        id: &IdHash,
        now: u64,
        idle: u64,
    ) -> Result<(), Error> {
        inner.touch(id, now, idle).await
    }
    async fn purge_expired(
        &self,
        inner: &MemoryStore,
        now: u64,
        limit: usize,
    ) -> Result<usize, Error> {
        inner.purge_expired(now, limit).await
    }
}

/// A memory store with a [`Twist`]: every method the twist does not hook is the memory
/// store's own, and so is corruption for the conformance suite.
#[derive(Default)]
struct Twisted<T> {
    inner: MemoryStore,
    twist: T,
}

impl<T> Twisted<T> {
    fn new(twist: T) -> Self {
        Self {
            inner: MemoryStore::new(),
            twist,
        }
    }
}

#[async_trait]
impl<T: Twist> Store for Twisted<T> {
    async fn create(&self, r: &Record, now: u64) -> Result<(), Error> {
        self.twist.create(&self.inner, r, now).await
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, Error> {
        self.inner.load(id, now).await
    }
    async fn update(&self, r: &Record, now: u64) -> Result<u64, Error> {
        self.twist.update(&self.inner, r, now).await
    }
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        self.twist
            .apply(&self.inner, id, changes, now, idle_deadline)
            .await
    }
    async fn touch(&self, id: &IdHash, now: u64, idle: u64) -> Result<(), Error> {
        self.twist.touch(&self.inner, id, now, idle).await
    }
    async fn delete(&self, id: &IdHash) -> Result<bool, Error> {
        self.inner.delete(id).await
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Record>, Error> {
        self.inner.sessions_of(user, now).await
    }
    async fn revoke_user_sessions(&self, u: &str, e: Option<&IdHash>) -> Result<u64, Error> {
        self.inner.revoke_user_sessions(u, e).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.inner.user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, Error> {
        self.inner.bump_user_epoch(user).await
    }
    async fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        self.twist.purge_expired(&self.inner, now, limit).await
    }
}

#[async_trait]
impl<T: Twist> ConformanceTarget for Twisted<T> {
    async fn inject_corrupt(&self, id: &IdHash) -> Result<(), Error> {
        self.inner.inject_corrupt(id).await
    }
}

/// A store that forgets compare-and-swap: `update` overwrites whatever is there.
#[derive(Clone)]
struct LostUpdate;

#[async_trait]
impl Twist for LostUpdate {
    async fn update(&self, inner: &MemoryStore, r: &Record, now: u64) -> Result<u64, Error> {
        let Some(current) = inner.load(&r.id_hash, now).await? else {
            return Err(Error::not_found());
        };
        let mut forced = r.clone();
        forced.version = current.version;
        inner.update(&forced, now).await
    }
}

/// Runs the conformance suite over memory stores with `twist`, which must fail it (`passed`
/// is the panic message if it does not); the suite's failure message.
async fn conformance_failure<T: Twist + Clone>(twist: T, passed: &str) -> String {
    let outcome = std::panic::AssertUnwindSafe(conformance::run(|| {
        let twist = twist.clone();
        async move { Twisted::new(twist) }
    }))
    .catch_unwind()
    .await;
    let panic = outcome.expect_err(passed);
    panic.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_catches_a_store_without_cas() {
    let message =
        conformance_failure(LostUpdate, "the suite passed a store that ignores versions").await;
    assert!(
        message.contains("update_with_stale_version_is_conflict_and_writes_nothing"),
        "{message}"
    );
    assert!(
        message.contains("cas_race_32_tasks_no_lost_increments"),
        "{message}"
    );
    assert!(!message.contains("delete_then_load_is_none"), "{message}");
}

/// A store that is down.
struct DownStore;

fn down() -> Error {
    Error::unavailable("store down", std::io::Error::other("connection refused"))
}

#[async_trait]
impl Store for DownStore {
    async fn create(&self, _: &Record, _: u64) -> Result<(), Error> {
        Err(down())
    }
    async fn load(&self, _: &IdHash, _: u64) -> Result<Option<Record>, Error> {
        Err(down())
    }
    async fn update(&self, _: &Record, _: u64) -> Result<u64, Error> {
        Err(down())
    }
    async fn touch(&self, _: &IdHash, _: u64, _: u64) -> Result<(), Error> {
        Err(down())
    }
    async fn delete(&self, _: &IdHash) -> Result<bool, Error> {
        Err(down())
    }
    async fn sessions_of(&self, _: &str, _: u64) -> Result<Vec<Record>, Error> {
        Err(down())
    }
    async fn revoke_user_sessions(&self, _: &str, _: Option<&IdHash>) -> Result<u64, Error> {
        Err(down())
    }
    async fn user_epoch(&self, _: &str) -> Result<u64, Error> {
        Err(down())
    }
    async fn bump_user_epoch(&self, _: &str) -> Result<u64, Error> {
        Err(down())
    }
    async fn purge_expired(&self, _: u64, _: usize) -> Result<usize, Error> {
        Err(down())
    }
}

// ---- harness ----

struct Env {
    ring: KeyRing,
    store: Arc<MemoryStore>,
    clock: ManualClock,
    mgr: SessionManager,
}

fn env(mode: Mode) -> Env {
    let ring = KeyRing::generate().unwrap();
    let store = Arc::new(MemoryStore::new());
    let clock = ManualClock::new(T0);
    let mgr = SessionManager::new(&ring, store.clone())
        .unwrap()
        .with_mode(mode)
        .with_clock(Arc::new(clock.clone()));
    Env {
        ring,
        store,
        clock,
        mgr,
    }
}

const MODES: [Mode; 3] = [Mode::Server, Mode::Client, Mode::Hybrid];

fn value(commit: &Commit) -> String {
    match &commit.cookie {
        CookieUpdate::Set { value, .. } => value.clone(),
        other => panic!("expected a Set cookie, got {other:?}"),
    }
}

impl Env {
    async fn load(&self, cookie: &str) -> Session {
        self.mgr.load(Some(cookie)).await.unwrap()
    }

    /// A new session holding `key = 1`; returns its cookie.
    async fn new_session(&self) -> String {
        let mut s = self.mgr.load(None).await.unwrap();
        assert!(s.is_new());
        s.insert("k", &1).unwrap();
        value(&self.mgr.commit(s).await.unwrap())
    }

    async fn login(&self, cookie: Option<&str>, user: &str) -> String {
        let mut s = self.mgr.load(cookie).await.unwrap();
        s.login(user, Device::new().with_label("test")).unwrap();
        value(&self.mgr.commit(s).await.unwrap())
    }
}

// ---- basics ----

#[tokio::test]
async fn data_round_trips_in_every_mode() {
    for mode in MODES {
        let e = env(mode);
        let mut s = e.mgr.load(None).await.unwrap();
        s.insert("cart", &vec![1u32, 2, 3]).unwrap();
        s.insert("name", "Zoë").unwrap();
        let cookie = value(&e.mgr.commit(s).await.unwrap());
        let mut s = e.load(&cookie).await;
        assert!(!s.is_new(), "{mode:?}");
        assert_eq!(s.get::<Vec<u32>>("cart").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(s.get::<String>("name").unwrap().as_deref(), Some("Zoë"));
        assert_eq!(s.keys(), vec!["cart", "name"]);
        assert_eq!(
            s.get::<u32>("name").unwrap_err().kind(),
            cloakroom::ErrorKind::Value
        );
        assert!(s.remove("cart").unwrap());
        let commit = e.mgr.commit(s).await.unwrap();
        let cookie = match mode {
            // Server mode keeps the cookie; the client modes reseal the data.
            Mode::Server => {
                assert_eq!(commit.cookie, CookieUpdate::Keep);
                cookie
            }
            _ => value(&commit),
        };
        let s = e.load(&cookie).await;
        assert_eq!(s.get::<Vec<u32>>("cart").unwrap(), None, "{mode:?}");
        assert_eq!(s.keys(), vec!["name"]);
    }
}

#[tokio::test]
async fn server_mode_stores_by_hash_and_cookie_is_signed_id() {
    let e = env(Mode::Server);
    let cookie = e.new_session().await;
    assert!(cookie.starts_with("s1."));
    let s = e.load(&cookie).await;
    let hash = s.id_hash().unwrap();
    let record = e.store.load(&hash, T0).await.unwrap().unwrap();
    assert_eq!(record.id_hash, hash);
    // The cookie carries the id (unverified look), the store only its SHA-256.
    let claims = cloakroom_token::inspect(&cookie).unwrap().claims.unwrap();
    assert_eq!(claims.payload.len(), 32);
    assert_eq!(
        cloakroom::SessionId::from_bytes(&claims.payload)
            .unwrap()
            .hash(),
        hash
    );
    let encoded = record.encode().unwrap();
    assert!(
        !encoded.windows(32).any(|w| w == claims.payload.as_slice()),
        "the store holds the live id"
    );
    // Logs and Debug output show neither the id nor the cookie, only the hash prefix.
    let shown = format!("{s:?} {record:?} {:?}", e.mgr);
    assert!(!shown.contains(&cookie));
    assert!(shown.contains(&hash.short()));
    assert!(!shown.contains(&hash.to_hex()));
}

#[tokio::test]
async fn anonymous_visit_without_writes_stores_nothing() {
    for mode in MODES {
        let e = env(mode);
        let s = e.mgr.load(None).await.unwrap();
        let commit = e.mgr.commit(s).await.unwrap();
        assert_eq!(commit.cookie, CookieUpdate::Keep, "{mode:?}");
        assert!(e.store.is_empty());
    }
}

#[tokio::test]
async fn forged_or_foreign_cookies_are_new_sessions_and_get_removed() {
    for mode in MODES {
        let e = env(mode);
        let cookie = e.new_session().await;
        let other_ring = env(mode);
        let foreign = other_ring.new_session().await;
        let mut tampered = cookie.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in [tampered.as_str(), foreign.as_str(), "garbage", ""] {
            let s = e.load(bad).await;
            assert!(s.is_new(), "{mode:?} accepted {bad:?}");
            assert_eq!(s.get::<u32>("k").unwrap(), None);
            let commit = e.mgr.commit(s).await.unwrap();
            assert_eq!(commit.cookie, CookieUpdate::Remove, "{mode:?}");
        }
        // The purpose is the cookie name: another name does not accept the token.
        let renamed = SessionManager::new(&e.ring, e.store.clone())
            .unwrap()
            .with_mode(mode)
            .with_clock(Arc::new(e.clock.clone()))
            .with_cookie_name("other")
            .unwrap();
        assert!(
            renamed.load(Some(&cookie)).await.unwrap().is_new(),
            "{mode:?}"
        );
        assert!(!e.load(&cookie).await.is_new());
    }
}

#[tokio::test]
async fn store_outage_fails_closed() {
    let good = env(Mode::Server);
    let cookie = good.new_session().await;
    for mode in [Mode::Server, Mode::Hybrid] {
        let mgr = SessionManager::new(&good.ring, Arc::new(DownStore))
            .unwrap()
            .with_mode(mode)
            .with_clock(Arc::new(good.clock.clone()));
        if mode == Mode::Server {
            let err = mgr.load(Some(&cookie)).await.unwrap_err();
            assert_eq!(err.kind(), cloakroom::ErrorKind::Unavailable);
            assert!(std::error::Error::source(&err).is_some());
        }
        let mut s = mgr.load(None).await.unwrap();
        s.insert("k", &1).unwrap();
        assert_eq!(
            mgr.commit(s).await.unwrap_err().kind(),
            cloakroom::ErrorKind::Unavailable
        );
        assert_eq!(
            mgr.revoke_user("u").await.unwrap_err().kind(),
            cloakroom::ErrorKind::Unavailable
        );
    }
    // Client mode reads the user's epoch for logged-in cookies: fails closed too.
    let client = env(Mode::Client);
    let cookie = client.login(None, "alice").await;
    let mgr = SessionManager::new(&client.ring, Arc::new(DownStore))
        .unwrap()
        .with_mode(Mode::Client)
        .with_clock(Arc::new(client.clock.clone()));
    assert_eq!(
        mgr.load(Some(&cookie)).await.unwrap_err().kind(),
        cloakroom::ErrorKind::Unavailable
    );
}

#[tokio::test]
async fn corrupt_record_is_treated_as_absent() {
    let e = env(Mode::Server);
    let cookie = e.new_session().await;
    let hash = e.load(&cookie).await.id_hash().unwrap();
    e.store.inject_corrupt(&hash).await.unwrap();
    assert_eq!(
        e.store.load(&hash, T0).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let s = e.load(&cookie).await;
    assert!(s.is_new());
    assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Remove);
    assert!(e.store.is_empty(), "the corrupt record was not cleaned up");
}

// ---- policy ----

#[tokio::test]
async fn idle_and_absolute_expiry_with_sparse_touches() {
    for mode in [Mode::Server, Mode::Hybrid, Mode::Client] {
        let e = env(mode);
        let mut cookie = e.new_session().await;
        // One minute later, nothing changed: no write (the touch fraction is 3 minutes).
        e.clock.advance(Duration::from_secs(60));
        let s = e.load(&cookie).await;
        let before = if mode == Mode::Client {
            None
        } else {
            e.store
                .load(&s.id_hash().unwrap(), e.clock_now())
                .await
                .unwrap()
        };
        let commit = e.mgr.commit(s).await.unwrap();
        assert_eq!(commit.cookie, CookieUpdate::Keep, "{mode:?}");
        if let Some(before) = before {
            let after = e
                .store
                .load(&before.id_hash, e.clock_now())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                after.last_seen, T0,
                "{mode:?} wrote before the touch fraction"
            );
            assert_eq!(after, before);
        }
        // Every 20 minutes a request slides the idle deadline...
        let mut t = 60;
        while t + 1200 < 12 * 3600 {
            e.clock.advance(Duration::from_secs(1200));
            t += 1200;
            let s = e.load(&cookie).await;
            assert!(!s.is_new(), "{mode:?} died at +{t}s despite activity");
            let commit = e.mgr.commit(s).await.unwrap();
            if let CookieUpdate::Set { value, .. } = commit.cookie {
                cookie = value;
            }
        }
        // ...but never past the absolute deadline.
        e.clock.set(T0 + 12 * 3600);
        assert!(e.load(&cookie).await.is_new(), "{mode:?} outlived 12 h");

        // Idle: 30 minutes without a request ends it.
        let cookie = e.new_session().await;
        e.clock.advance(Duration::from_secs(29 * 60));
        assert!(!e.load(&cookie).await.is_new());
        e.clock.advance(Duration::from_secs(60));
        assert!(
            e.load(&cookie).await.is_new(),
            "{mode:?} outlived 30 min idle"
        );
    }
}

impl Env {
    fn clock_now(&self) -> u64 {
        use cloakroom::Clock as _;
        self.clock.now()
    }
}

#[tokio::test]
async fn client_modes_refuse_oversized_cookies_clearly() {
    for mode in [Mode::Client, Mode::Hybrid] {
        let e = env(mode);
        let mut s = e.mgr.load(None).await.unwrap();
        s.insert("blob", &"x".repeat(2000)).unwrap();
        let ok = e.mgr.commit(s).await.unwrap();
        let CookieUpdate::Set { value, .. } = &ok.cookie else {
            panic!("no cookie")
        };
        assert!(value.len() + e.mgr.cookie_name().len() < MAX_COOKIE_LEN);
        let mut s = e.mgr.load(None).await.unwrap();
        s.insert("blob", &"x".repeat(3500)).unwrap();
        let err = e.mgr.commit(s).await.unwrap_err();
        assert_eq!(err.kind(), cloakroom::ErrorKind::TooLarge, "{mode:?}");
        assert!(err.to_string().contains("4096"), "{err}");
        assert!(err.to_string().contains("byte"), "{err}");
    }
    // Server mode has no such limit.
    let e = env(Mode::Server);
    let mut s = e.mgr.load(None).await.unwrap();
    s.insert("blob", &"x".repeat(64 * 1024)).unwrap();
    let cookie = value(&e.mgr.commit(s).await.unwrap());
    assert_eq!(
        e.load(&cookie)
            .await
            .get::<String>("blob")
            .unwrap()
            .unwrap()
            .len(),
        64 * 1024
    );
}

// ---- verbs ----

#[tokio::test]
async fn login_cycles_the_id_and_the_old_id_no_longer_loads() {
    for mode in MODES {
        let e = env(mode);
        let anon = e.new_session().await;
        let mut s = e.load(&anon).await;
        let old_hash = s.id_hash();
        let old_token = s.csrf_token().unwrap();
        s.login(
            "alice",
            Device::new().with_user_agent("UA").with_ip("192.0.2.7"),
        )
        .unwrap();
        assert!(
            !s.verify_csrf(&old_token),
            "{mode:?}: login kept the CSRF secret"
        );
        let fresh_token = s.csrf_token().unwrap();
        assert_eq!(s.user_id(), Some("alice"));
        let commit = e.mgr.commit(s).await.unwrap();
        let cookie = value(&commit);
        assert_ne!(cookie, anon);

        let s = e.load(&cookie).await;
        assert_eq!(s.user_id(), Some("alice"), "{mode:?}");
        assert_eq!(
            s.get::<u32>("k").unwrap(),
            Some(1),
            "{mode:?}: data lost at login"
        );
        assert!(s.verify_csrf(&fresh_token), "{mode:?}");
        assert_eq!(s.device().user_agent.as_deref(), Some("UA"));
        if mode != Mode::Client {
            assert_ne!(s.id_hash(), old_hash);
            // The old id no longer loads, from the cookie or the store.
            let old = e.load(&anon).await;
            assert!(old.is_new(), "{mode:?}: the pre-login id still works");
            assert!(e
                .store
                .load(&old_hash.unwrap(), e.clock_now())
                .await
                .unwrap()
                .is_none());
            let listed = e.mgr.sessions_of("alice").await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(Some(listed[0].id_hash), s.id_hash());
            assert_eq!(listed[0].device.ip.as_deref(), Some("192.0.2.7"));
        }
    }
}

#[tokio::test]
async fn sign_out_other_sessions_leaves_exactly_the_current_one() {
    for mode in MODES {
        let e = env(mode);
        let c1 = e.login(None, "alice").await;
        let c2 = e.login(None, "alice").await;
        let c3 = e.login(None, "alice").await;
        let bob = e.login(None, "bob").await;
        let mut s = e.load(&c2).await;
        let n = e.mgr.sign_out_other_sessions(&mut s).await.unwrap();
        let commit = e.mgr.commit(s).await.unwrap();
        let c2 = match mode {
            Mode::Client => value(&commit),
            _ => {
                assert_eq!(n, 2, "{mode:?}");
                c2
            }
        };
        assert!(e.load(&c1).await.is_new(), "{mode:?}: c1 survived");
        assert!(e.load(&c3).await.is_new(), "{mode:?}: c3 survived");
        assert_eq!(e.load(&c2).await.user_id(), Some("alice"), "{mode:?}");
        assert_eq!(e.load(&bob).await.user_id(), Some("bob"), "{mode:?}");
        if mode != Mode::Client {
            let listed = e.mgr.sessions_of("alice").await.unwrap();
            let current = e.load(&c2).await.id_hash().unwrap();
            assert_eq!(
                listed.iter().map(|i| i.id_hash).collect::<Vec<_>>(),
                vec![current]
            );
        } else {
            assert_eq!(
                e.mgr.sessions_of("alice").await.unwrap_err().kind(),
                cloakroom::ErrorKind::InvalidInput
            );
        }
    }
}

#[tokio::test]
async fn revoke_user_kills_every_session_including_client_cookies() {
    for mode in MODES {
        let e = env(mode);
        let a1 = e.login(None, "alice").await;
        let a2 = e.login(None, "alice").await;
        let bob = e.login(None, "bob").await;
        let n = e.mgr.revoke_user("alice").await.unwrap();
        if mode != Mode::Client {
            assert_eq!(n, 2, "{mode:?}");
        }
        assert_eq!(e.store.user_epoch("alice").await.unwrap(), 1);
        for c in [&a1, &a2] {
            let s = e.load(c).await;
            assert!(s.is_new(), "{mode:?}: a revoked cookie still works");
            assert_eq!(s.user_id(), None);
        }
        assert_eq!(e.load(&bob).await.user_id(), Some("bob"), "{mode:?}");
        // Logging in again works, with the new epoch.
        let again = e.login(None, "alice").await;
        assert_eq!(e.load(&again).await.user_id(), Some("alice"), "{mode:?}");
    }
}

#[tokio::test]
async fn end_one_session_from_the_devices_page() {
    for mode in [Mode::Server, Mode::Hybrid] {
        let e = env(mode);
        let a1 = e.login(None, "alice").await;
        let a2 = e.login(None, "alice").await;
        let h1 = e.load(&a1).await.id_hash().unwrap();
        assert!(
            !e.mgr.end_session("bob", &h1).await.unwrap(),
            "ended another user's session"
        );
        assert!(e.mgr.end_session("alice", &h1).await.unwrap());
        assert!(e.load(&a1).await.is_new());
        assert!(!e.load(&a2).await.is_new());
    }
}

#[tokio::test]
async fn logout_destroys() {
    for mode in MODES {
        let e = env(mode);
        let c = e.login(None, "alice").await;
        let mut s = e.load(&c).await;
        s.logout();
        assert!(s.is_destroyed());
        assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Remove);
        if mode != Mode::Client {
            assert!(e.load(&c).await.is_new(), "{mode:?}");
            assert!(e.store.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_racing_a_slower_commit_stays_dead() {
    for mode in [Mode::Server, Mode::Hybrid] {
        let e = env(mode);
        let c = e.login(None, "alice").await;
        let mut slow = e.load(&c).await;
        let mut quick = e.load(&c).await;
        quick.logout();
        assert_eq!(
            e.mgr.commit(quick).await.unwrap().cookie,
            CookieUpdate::Remove
        );
        slow.insert("late", &1).unwrap();
        let commit = e.mgr.commit(slow).await.unwrap();
        if mode == Mode::Server {
            assert!(commit.ended_concurrently);
            assert_eq!(commit.cookie, CookieUpdate::Remove);
        }
        let after = match &commit.cookie {
            CookieUpdate::Set { value, .. } => value.clone(),
            _ => c.clone(),
        };
        assert!(
            e.load(&after).await.is_new(),
            "{mode:?}: logout undone by a slower commit"
        );
        assert!(e.load(&c).await.is_new());
        assert!(e.store.is_empty(), "{mode:?}: record resurrected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_pairs_on_different_keys_keep_all_keys() {
    let e = Arc::new(env(Mode::Server));
    let mut cookies = Vec::new();
    for _ in 0..1000 {
        cookies.push(e.new_session().await);
    }
    // Both requests of a pair read the same version before either commits.
    let mut pending = Vec::new();
    for (i, c) in cookies.iter().enumerate() {
        let mut a = e.load(c).await;
        let mut b = e.load(c).await;
        a.insert(&format!("a{i}"), &i).unwrap();
        b.insert(&format!("b{i}"), &i).unwrap();
        pending.push(a);
        pending.push(b);
    }
    let handles: Vec<_> = pending
        .into_iter()
        .map(|s| {
            let e = e.clone();
            tokio::spawn(async move { e.mgr.commit(s).await })
        })
        .collect();
    for h in handles {
        let commit = h.await.unwrap().unwrap();
        assert!(!commit.ended_concurrently);
    }
    let mut keys = BTreeSet::new();
    for c in &cookies {
        let s = e.load(c).await;
        for k in s.keys() {
            if k != "k" {
                keys.insert(k.to_owned());
            }
        }
    }
    assert_eq!(keys.len(), 2000, "concurrent commits lost writes");
}

#[tokio::test]
async fn discard_writes_nothing() {
    for mode in MODES {
        let e = env(mode);
        // A new session's writes: nothing stored, no cookie issued.
        let mut s = e.mgr.load(None).await.unwrap();
        s.insert("k", &1).unwrap();
        e.mgr.discard(s);
        assert!(e.store.is_empty(), "{mode:?}");

        let c = e.new_session().await;
        let stored_before = e.store.len();
        let mut s = e.load(&c).await;
        s.insert("k", &2).unwrap();
        s.flash(Level::Info, "hi");
        e.mgr.discard(s);
        let s = e.load(&c).await;
        assert_eq!(s.get::<u32>("k").unwrap(), Some(1), "{mode:?}");
        assert!(s.peek_flashes().is_empty());

        // A login that ends in a 5xx logs nobody in (the seed's PHP story).
        let mut s = e.load(&c).await;
        s.login("mallory", Device::new()).unwrap();
        e.mgr.discard(s);
        assert_eq!(e.load(&c).await.user_id(), None, "{mode:?}");
        assert_eq!(e.store.len(), stored_before);
        if mode != Mode::Client {
            assert!(e.mgr.sessions_of("mallory").await.unwrap().is_empty());
        }
    }
}

// ---- flash and CSRF ----

#[tokio::test]
async fn flash_messages_are_shown_once() {
    for mode in MODES {
        let e = env(mode);
        let mut s = e.mgr.load(None).await.unwrap();
        s.flash(Level::Success, "Saved");
        s.flash(Level::Warning, "Check your <email>");
        let c = value(&e.mgr.commit(s).await.unwrap());
        let mut s = e.load(&c).await;
        let shown = s.take_flashes();
        assert_eq!(shown.len(), 2, "{mode:?}");
        assert_eq!(shown[0].level, Level::Success);
        assert_eq!(shown[1].message, "Check your <email>");
        assert!(s.take_flashes().is_empty());
        let commit = e.mgr.commit(s).await.unwrap();
        let c = match commit.cookie {
            CookieUpdate::Set { value, .. } => value,
            _ => c,
        };
        let mut s = e.load(&c).await;
        assert!(s.take_flashes().is_empty(), "{mode:?}: flash shown twice");
    }
}

#[tokio::test]
async fn csrf_tokens_are_fresh_per_response_and_bound_to_the_session() {
    let e = env(Mode::Server);
    let mut s = e.mgr.load(None).await.unwrap();
    assert!(!s.verify_csrf("anything"));
    let t1 = s.csrf_token().unwrap();
    let t2 = s.csrf_token().unwrap();
    assert_ne!(t1, t2);
    assert!(s.verify_csrf(&t1) && s.verify_csrf(&t2));
    // An anonymous visitor's secret rides in its own signed cookie, not in the store.
    let csrf = csrf_value(&e.mgr.commit(s).await.unwrap());
    let s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
    assert!(s.verify_csrf(&t1), "secret not kept");
    assert!(s.require_csrf(Some(&t2)).is_ok());
    assert_eq!(
        s.require_csrf(None).unwrap_err().kind(),
        cloakroom::ErrorKind::Forbidden
    );
    let mut other = e.mgr.load(None).await.unwrap();
    let foreign = other.csrf_token().unwrap();
    assert!(!s.verify_csrf(&foreign));
    assert!(!format!("{s:?}").contains(&t1));
    // Reserved keys are not the application's to write.
    let c = e.new_session().await;
    let mut s = e.load(&c).await;
    assert_eq!(
        s.insert("__cloakroom.csrf", &1).unwrap_err().kind(),
        cloakroom::ErrorKind::InvalidInput
    );
    assert!(!s.keys().iter().any(|k| k.starts_with("__cloakroom")));
}

proptest! {
    #[test]
    fn csrf_mask_round_trips(secret in any::<[u8; 32]>(), pad in any::<[u8; 32]>(), other in any::<[u8; 32]>()) {
        let s = CsrfSecret::from_bytes(secret);
        let token = s.mask_with_pad(&pad);
        prop_assert_eq!(token.len(), cloakroom::CSRF_TOKEN_LEN);
        prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let back = cloakroom::unmask_csrf_token(&token).unwrap();
        prop_assert_eq!(back.expose(), &secret);
        prop_assert!(s.verify(&token));
        prop_assert_eq!(CsrfSecret::from_bytes(other).verify(&token), other == secret);
    }

    #[test]
    fn csrf_garbage_never_verifies(secret in any::<[u8; 32]>(), junk in ".{0,120}") {
        let s = CsrfSecret::from_bytes(secret);
        let ok = s.verify(&junk);
        // Only a masking of this very secret verifies.
        prop_assert_eq!(ok, cloakroom::unmask_csrf_token(&junk).is_some_and(|u| u == s));
    }
}

// ---- usable from a tower middleware ----

fn assert_send_sync<T: Send + Sync>(_: &T) {}
fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn session_layer_types_and_futures_are_send() {
    let e = env(Mode::Server);
    assert_send_sync(&e.mgr);
    let s = e.mgr.load(None).await.unwrap();
    assert_send_sync(&s);
    let load = e.mgr.load(None);
    assert_send(&load);
    drop(load);
    let commit = e.mgr.commit(s);
    assert_send(&commit);
    assert_eq!(commit.await.unwrap().cookie, CookieUpdate::Keep);
    let revoke = e.mgr.revoke_user("u");
    assert_send(&revoke);
    assert_eq!(revoke.await.unwrap(), 0);
}

#[tokio::test]
async fn same_key_written_twice_keeps_the_later_commit() {
    let e = env(Mode::Server);
    let c = e.new_session().await;
    let mut a = e.load(&c).await;
    let mut b = e.load(&c).await;
    a.insert("k", &10).unwrap();
    a.insert("only_a", &true).unwrap();
    b.insert("k", &20).unwrap();
    b.remove("only_b_removed").unwrap();
    e.mgr.commit(a).await.unwrap();
    e.mgr.commit(b).await.unwrap();
    let s = e.load(&c).await;
    assert_eq!(s.get::<u32>("k").unwrap(), Some(20));
    assert_eq!(s.get::<bool>("only_a").unwrap(), Some(true));
}

#[tokio::test]
async fn purge_expired_through_the_manager() {
    let e = env(Mode::Server);
    for _ in 0..25 {
        e.new_session().await;
    }
    let keep_clock = e.clock_now();
    e.clock.set(keep_clock + 31 * 60);
    let live = e.new_session().await;
    assert_eq!(e.mgr.purge_expired(10).await.unwrap(), 25);
    assert_eq!(e.store.len(), 1);
    assert!(!e.load(&live).await.is_new());
}

#[tokio::test]
async fn cycle_id_keeps_user_and_data_under_a_new_id() {
    for mode in [Mode::Server, Mode::Hybrid] {
        let e = env(mode);
        let c = e.login(None, "alice").await;
        e.clock.advance(Duration::from_secs(600));
        let mut s = e.load(&c).await;
        let old_hash = s.id_hash();
        let created = s.created();
        s.cycle_id().unwrap();
        s.insert("after", &1).unwrap();
        let c2 = value(&e.mgr.commit(s).await.unwrap());
        assert!(
            e.load(&c).await.is_new(),
            "{mode:?}: old id survived the cycle"
        );
        let s = e.load(&c2).await;
        assert_ne!(s.id_hash(), old_hash);
        assert_eq!(s.user_id(), Some("alice"));
        assert_eq!(s.created(), created, "{mode:?}: a cycle is not a new login");
        assert_eq!(s.get::<u32>("after").unwrap(), Some(1));
        // The absolute deadline still counts from the login.
        let record = e
            .store
            .load(&s.id_hash().unwrap(), e.clock_now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            record.absolute_deadline,
            T0 + 12 * 3600,
            "{mode:?}: cycling extended the session"
        );
    }
}

/// A store where an administrator's `revoke_user` runs just before each login's record is
/// written (after the login read the user's epoch): the worst interleaving.
struct RevokeDuringCreate;

#[async_trait]
impl Twist for RevokeDuringCreate {
    async fn create(&self, inner: &MemoryStore, r: &Record, now: u64) -> Result<(), Error> {
        if let Some(user) = &r.user_id {
            inner.bump_user_epoch(user).await?;
            inner.revoke_user_sessions(user, None).await?;
        }
        inner.create(r, now).await
    }
}

#[tokio::test]
async fn a_login_racing_revoke_user_does_not_survive_it() {
    for mode in [Mode::Server, Mode::Hybrid] {
        let store = Arc::new(Twisted::new(RevokeDuringCreate));
        let ring = KeyRing::generate().unwrap();
        let mgr = SessionManager::new(&ring, store.clone())
            .unwrap()
            .with_mode(mode)
            .with_clock(Arc::new(ManualClock::new(T0)));
        let mut s = mgr.load(None).await.unwrap();
        s.login("alice", Device::new()).unwrap();
        let err = mgr.commit(s).await.unwrap_err();
        assert_eq!(err.kind(), cloakroom::ErrorKind::Ended, "{mode:?}");
        assert!(
            store.inner.is_empty(),
            "{mode:?}: a revoked login left a session"
        );
    }
}

#[tokio::test]
async fn cookies_minted_with_a_retired_primary_are_reissued() {
    for mode in MODES {
        let e = env(mode);
        let c = e.login(None, "alice").await;
        let mut ring = e.ring.clone();
        let new_kid = ring.rotate().unwrap().as_str().to_owned();
        let rotated = SessionManager::new(&ring, e.store.clone())
            .unwrap()
            .with_mode(mode)
            .with_clock(Arc::new(e.clock.clone()));
        // Still valid (the old key is in the ring), and reissued with the new primary.
        let s = rotated.load(Some(&c)).await.unwrap();
        assert_eq!(s.user_id(), Some("alice"), "{mode:?}");
        let fresh = value(&rotated.commit(s).await.unwrap());
        assert_ne!(fresh, c);
        assert_eq!(cloakroom_token::inspect(&fresh).unwrap().key_id, new_kid);
        let s = rotated.load(Some(&fresh)).await.unwrap();
        assert_eq!(s.user_id(), Some("alice"), "{mode:?}");
        // A cookie already on the primary is left alone.
        assert_eq!(rotated.commit(s).await.unwrap().cookie, CookieUpdate::Keep);
    }
}

// ---- several cookies of one name, remember me, the split sign-out ----

#[tokio::test]
async fn load_any_takes_the_first_cookie_that_opens() {
    for mode in MODES {
        let e = env(mode);
        let real = e.login(None, "alice").await;
        let foreign = env(mode).login(None, "mallory").await;
        for planted in [foreign.as_str(), "garbage"] {
            let s = e.mgr.load_any(&[planted, &real]).await.unwrap();
            assert_eq!(s.user_id(), Some("alice"), "{mode:?}");
            let commit = e.mgr.commit(s).await.unwrap();
            assert_ne!(
                commit.cookie,
                CookieUpdate::Remove,
                "{mode:?}: the real cookie is not removed for a planted one"
            );
        }
        // None opens: a new session, and the stale cookie goes.
        let s = e.mgr.load_any(&["garbage", &foreign]).await.unwrap();
        assert!(s.is_new(), "{mode:?}");
        assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Remove);
        // No cookie at all: nothing to remove.
        let s = e.mgr.load_any(&[]).await.unwrap();
        assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Keep);
        // Past the limit, nothing more is tried.
        let mut many = vec!["garbage"; cloakroom::MAX_COOKIE_CANDIDATES];
        many.push(&real);
        assert!(e.mgr.load_any(&many).await.unwrap().is_new(), "{mode:?}");
    }
}

#[tokio::test]
async fn a_remembered_login_lives_its_own_bounded_lifetime_in_every_mode() {
    for mode in MODES {
        let ring = KeyRing::generate().unwrap();
        let clock = ManualClock::new(T0);
        let policy = cloakroom::Policy::default()
            .with_max_remember(Duration::from_secs(3 * 86_400))
            .unwrap();
        let mgr = SessionManager::new(&ring, Arc::new(MemoryStore::new()))
            .unwrap()
            .with_mode(mode)
            .with_policy(policy)
            .with_clock(Arc::new(clock.clone()));
        let mut s = mgr.load(None).await.unwrap();
        assert!(s
            .login_remembered("alice", Device::new(), Duration::ZERO)
            .is_err());
        s.login_remembered("alice", Device::new(), Duration::from_secs(30 * 86_400))
            .unwrap();
        assert!(s.is_remembered());
        let commit = mgr.commit(s).await.unwrap();
        let CookieUpdate::Set {
            value: cookie,
            max_age,
        } = &commit.cookie
        else {
            panic!("{commit:?}");
        };
        assert_eq!(*max_age, 3 * 86_400, "{mode:?}: cut to the policy's bound");
        // Two idle days later: still there (the idle timeout does not end it).
        clock.advance(Duration::from_secs(2 * 86_400));
        let mut s = mgr.load(Some(cookie)).await.unwrap();
        assert_eq!(s.user_id(), Some("alice"), "{mode:?}");
        assert!(s.is_remembered());
        s.insert("k", &1).unwrap();
        let next = match mgr.commit(s).await.unwrap().cookie {
            CookieUpdate::Set { value, .. } => value,
            _ => cookie.clone(),
        };
        // A plain login over it is an ordinary session again.
        let mut s = mgr.load(Some(&next)).await.unwrap();
        s.login("alice", Device::new()).unwrap();
        assert!(!s.is_remembered());
        // The bound is the end.
        clock.set(T0 + 3 * 86_400);
        assert!(mgr.load(Some(&next)).await.unwrap().is_new(), "{mode:?}");
    }
}

#[tokio::test]
async fn the_split_sign_out_applies_the_new_epoch_in_client_mode() {
    let e = env(Mode::Client);
    let other = e.login(None, "alice").await;
    let mine = e.login(None, "alice").await;
    let mut s = e.load(&mine).await;
    let done = e.mgr.sign_out_others_of("alice", None).await.unwrap();
    assert_eq!(done.ended(), 0);
    assert_eq!(s.apply_signed_out(&done), 0);
    let mine = value(&e.mgr.commit(s).await.unwrap());
    assert_eq!(e.load(&mine).await.user_id(), Some("alice"));
    assert!(e.load(&other).await.is_new());
}

// ---- the background purger ----

mod purger {
    use super::*;
    use cloakroom::{Policy, PurgeConfig, Purger};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    /// Puts `expiring` records that die at `T0 + 30 min` and `live` ones that live a day.
    async fn fill(store: &MemoryStore, expiring: usize, live: usize) {
        let policy = Policy::default();
        for i in 0..expiring + live {
            let id = cloakroom::SessionId::generate().unwrap().hash();
            let mut r = Record::new(id, T0, &policy);
            if i >= expiring {
                r.idle_deadline = T0 + 86_400;
                r.absolute_deadline = T0 + 86_400;
            }
            store.create(&r, r.last_seen).await.unwrap();
        }
    }

    /// Waits (at most 10 s) until `done` holds.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn every(ms: u64, batch: usize) -> PurgeConfig {
        PurgeConfig::new(Duration::from_millis(ms), batch).unwrap()
    }

    #[tokio::test]
    async fn expired_records_vanish_after_an_interval_without_a_request() {
        let store = Arc::new(MemoryStore::new());
        fill(&store, 25, 3).await;
        let clock = ManualClock::new(T0 + 10);
        let purger = Purger::spawn(store.clone(), Arc::new(clock.clone()), every(100, 10)).unwrap();
        eventually("a first round", || purger.stats().rounds >= 1).await;
        assert_eq!(store.len(), 28, "nothing is due yet");

        // Past the idle deadline: the next round takes them, in batches of 10.
        clock.advance(Duration::from_secs(31 * 60));
        eventually("the expired ones are purged", || store.len() == 3).await;
        let rounds = purger.stats().rounds;
        eventually("two more rounds", || purger.stats().rounds >= rounds + 2).await;
        assert_eq!(store.len(), 3, "the live ones stay");
        let stats = purger.stats();
        assert_eq!((stats.purged, stats.failures), (25, 0));

        // Until they expire too.
        clock.set(T0 + 86_400);
        eventually("the rest are purged", || store.is_empty()).await;
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_purger() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(T0);
        let purger = Purger::spawn(store.clone(), Arc::new(clock.clone()), every(20, 10)).unwrap();
        eventually("a first round", || purger.stats().rounds >= 1).await;
        drop(purger);

        fill(&store, 5, 0).await;
        clock.advance(Duration::from_secs(31 * 60));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.len(), 5, "a dropped purger deletes nothing");

        // shutdown() stops it too, and waits for it.
        let purger = Purger::spawn(store.clone(), Arc::new(clock.clone()), every(20, 10)).unwrap();
        eventually("the first round runs at once", || store.is_empty()).await;
        purger.shutdown().await;
        fill(&store, 5, 0).await;
        clock.advance(Duration::from_secs(31 * 60));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.len(), 5, "a shut-down purger deletes nothing");
    }

    /// A memory store whose `purge_expired` fails (or panics) the first `failures` times and
    /// records when each call came.
    struct Flaky {
        failures: u32,
        panic: bool,
        calls: AtomicU32,
        at: Mutex<Vec<Instant>>,
    }

    #[async_trait]
    impl Twist for Flaky {
        async fn purge_expired(
            &self,
            inner: &MemoryStore,
            now: u64,
            limit: usize,
        ) -> Result<usize, Error> {
            self.at.lock().unwrap().push(Instant::now());
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                assert!(!self.panic, "a store bug: purge_expired panicked");
                return Err(down());
            }
            inner.purge_expired(now, limit).await
        }
    }

    async fn backs_off_then_purges(panic: bool) {
        let store = Arc::new(Twisted::new(Flaky {
            failures: 4,
            panic,
            calls: AtomicU32::new(0),
            at: Mutex::new(Vec::new()),
        }));
        fill(&store.inner, 7, 2).await;
        let clock = ManualClock::new(T0 + 31 * 60);
        // The interval is long: only the back-off can bring the retries.
        let config = PurgeConfig::new(Duration::from_secs(3600), 100)
            .unwrap()
            .with_backoff(Duration::from_millis(100), Duration::from_millis(400))
            .unwrap();
        let purger = Purger::spawn(store.clone(), Arc::new(clock), config).unwrap();
        eventually("a failed first round", || purger.stats().failures >= 1).await;
        assert!(purger.stats().backing_off);

        // Down for four attempts, then it purges by itself, long before the interval.
        eventually("recovered and purged", || store.inner.len() == 2).await;
        let at = store.twist.at.lock().unwrap().clone();
        assert_eq!(at.len(), 5, "four failures and one success");
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        for (gap, least) in gaps.iter().zip([100, 200, 400, 400]) {
            assert!(
                *gap >= Duration::from_millis(least),
                "exponential back-off, capped: {gaps:?}"
            );
        }
        assert!(gaps[3] < Duration::from_secs(5), "the cap holds: {gaps:?}");
        let stats = purger.stats();
        assert_eq!((stats.failures, stats.rounds, stats.purged), (4, 1, 7));
        assert!(!stats.backing_off);
        // Back to the normal interval: no further attempt soon.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.twist.at.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn a_store_that_is_down_is_retried_with_backoff_until_it_is_back() {
        backs_off_then_purges(false).await;
    }

    #[tokio::test]
    async fn a_store_call_that_panics_is_a_failed_round_not_a_dead_purger() {
        backs_off_then_purges(true).await;
    }

    #[test]
    fn outside_a_runtime_spawn_says_so() {
        let e = Purger::spawn(
            Arc::new(MemoryStore::new()),
            Arc::new(ManualClock::new(T0)),
            PurgeConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), cloakroom::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}

// ---- anonymous CSRF: a signed double-submit cookie, nothing stored ----

fn csrf_value(commit: &Commit) -> String {
    match &commit.csrf_cookie {
        CookieUpdate::Set { value, .. } => value.clone(),
        other => panic!("expected the CSRF cookie to be set, got {other:?}"),
    }
}

#[tokio::test]
async fn anonymous_csrf_token_writes_nothing_and_sets_its_own_cookie() {
    for mode in MODES {
        let e = env(mode);
        assert_eq!(e.mgr.csrf_cookie_name(), "__Host-session-csrf");
        // A page view that renders a form.
        let mut s = e.mgr.load(None).await.unwrap();
        let token = s.csrf_token().unwrap();
        assert!(s.verify_csrf(&token), "{mode:?}");
        let commit = e.mgr.commit(s).await.unwrap();
        assert!(e.store.is_empty(), "{mode:?}: an anonymous form was stored");
        assert_eq!(
            commit.cookie,
            CookieUpdate::Keep,
            "{mode:?}: no session cookie"
        );
        let csrf = csrf_value(&commit);
        assert!(csrf.starts_with("s1."), "{mode:?}: a signed token");
        let CookieUpdate::Set { max_age, .. } = commit.csrf_cookie else {
            unreachable!()
        };
        assert!(max_age > 0);

        // The next request carries the CSRF cookie: the token verifies, nothing is stored,
        // and the cookie is left as it is.
        let mut s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
        assert!(
            s.verify_csrf(&token),
            "{mode:?}: the right cookie and token"
        );
        assert!(s.require_csrf(Some(&token)).is_ok());
        assert!(!s.verify_csrf("garbage"));
        assert_eq!(
            s.require_csrf(None).unwrap_err().kind(),
            cloakroom::ErrorKind::Forbidden
        );
        // Another page view: a fresh mask of the same cookie's secret.
        let again = s.csrf_token().unwrap();
        assert_ne!(again, token);
        assert!(s.verify_csrf(&again));
        let commit = e.mgr.commit(s).await.unwrap();
        assert_eq!(commit.csrf_cookie, CookieUpdate::Keep, "{mode:?}");
        assert_eq!(commit.cookie, CookieUpdate::Keep, "{mode:?}");
        assert!(e.store.is_empty(), "{mode:?}");

        // Without the cookie, the token is worthless.
        let s = e.mgr.load(None).await.unwrap();
        assert!(
            !s.verify_csrf(&token),
            "{mode:?}: a token without its cookie"
        );
        // Another visitor's cookie does not carry this token's secret, and its token does
        // not verify with this cookie.
        let mut other = e.mgr.load(None).await.unwrap();
        let other_token = other.csrf_token().unwrap();
        let other_csrf = csrf_value(&e.mgr.commit(other).await.unwrap());
        let s = e.mgr.load_with_csrf(None, Some(&other_csrf)).await.unwrap();
        assert!(!s.verify_csrf(&token), "{mode:?}: another visitor's cookie");
        let s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
        assert!(
            !s.verify_csrf(&other_token),
            "{mode:?}: another visitor's token"
        );
        // A tampered or foreign cookie gives nothing and is removed.
        let mut tampered = csrf.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let foreign = {
            let f = env(mode);
            let mut s = f.mgr.load(None).await.unwrap();
            s.csrf_token().unwrap();
            csrf_value(&f.mgr.commit(s).await.unwrap())
        };
        for bad in [tampered.as_str(), foreign.as_str(), "garbage"] {
            let s = e.mgr.load_with_csrf(None, Some(bad)).await.unwrap();
            assert!(!s.verify_csrf(&token), "{mode:?} accepted {bad:?}");
            let commit = e.mgr.commit(s).await.unwrap();
            assert_eq!(commit.csrf_cookie, CookieUpdate::Remove, "{mode:?}");
        }
        assert!(e.store.is_empty(), "{mode:?}");
    }
}

#[tokio::test]
async fn the_csrf_cookie_and_the_session_cookie_cannot_stand_in_for_each_other() {
    let e = env(Mode::Server);
    let mut s = e.mgr.load(None).await.unwrap();
    let token = s.csrf_token().unwrap();
    let csrf = csrf_value(&e.mgr.commit(s).await.unwrap());
    // The CSRF cookie offered as the session cookie opens nothing.
    let s = e.load(&csrf).await;
    assert!(s.is_new());
    assert!(!s.verify_csrf(&token));
    // A session cookie offered as the CSRF cookie carries no CSRF secret.
    let session = e.new_session().await;
    let s = e.mgr.load_with_csrf(None, Some(&session)).await.unwrap();
    assert!(!s.verify_csrf(&token));
    assert_eq!(
        e.mgr.commit(s).await.unwrap().csrf_cookie,
        CookieUpdate::Remove
    );
}

#[tokio::test]
async fn login_replaces_the_anonymous_csrf_token_with_the_sessions_own() {
    for mode in MODES {
        let e = env(mode);
        // The login page.
        let mut s = e.mgr.load(None).await.unwrap();
        let anon_token = s.csrf_token().unwrap();
        let csrf = csrf_value(&e.mgr.commit(s).await.unwrap());
        assert!(e.store.is_empty());
        // The login form's POST.
        let mut s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
        assert!(
            s.verify_csrf(&anon_token),
            "{mode:?}: the login form's token"
        );
        s.login("alice", Device::new()).unwrap();
        assert!(
            !s.verify_csrf(&anon_token),
            "{mode:?}: the anonymous token still works after login"
        );
        let session_token = s.csrf_token().unwrap();
        assert!(s.verify_csrf(&session_token));
        let commit = e.mgr.commit(s).await.unwrap();
        let cookie = value(&commit);
        assert_eq!(
            commit.csrf_cookie,
            CookieUpdate::Remove,
            "{mode:?}: the login response removes the anonymous CSRF cookie"
        );
        // A browser that still sends the old CSRF cookie: the session's secret rules.
        let mut s = e
            .mgr
            .load_with_csrf(Some(&cookie), Some(&csrf))
            .await
            .unwrap();
        assert_eq!(s.user_id(), Some("alice"), "{mode:?}");
        assert!(
            !s.verify_csrf(&anon_token),
            "{mode:?}: a token minted from the anonymous cookie verifies after login"
        );
        assert!(s.verify_csrf(&session_token), "{mode:?}");
        let fresh = s.csrf_token().unwrap();
        assert!(s.verify_csrf(&fresh));
        let commit = e.mgr.commit(s).await.unwrap();
        assert_eq!(commit.csrf_cookie, CookieUpdate::Remove, "{mode:?}");
        let s = e.mgr.load(Some(&cookie)).await.unwrap();
        assert!(
            s.verify_csrf(&fresh) && !s.verify_csrf(&anon_token),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn a_session_is_stored_only_when_something_is_put_in_it() {
    let e = env(Mode::Server);
    // Reading, a CSRF token, taking (no) flashes: nothing stored.
    let mut s = e.mgr.load(None).await.unwrap();
    s.get::<u32>("k").unwrap();
    s.csrf_token().unwrap();
    assert!(s.take_flashes().is_empty());
    let commit = e.mgr.commit(s).await.unwrap();
    assert!(e.store.is_empty());
    let csrf = csrf_value(&commit);
    // A flash is something: now the visitor has a session, and keeps the CSRF cookie.
    let mut s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
    let token = s.csrf_token().unwrap();
    s.flash(Level::Error, "Wrong name or password.");
    let commit = e.mgr.commit(s).await.unwrap();
    assert_eq!(e.store.len(), 1);
    assert_eq!(commit.csrf_cookie, CookieUpdate::Keep);
    let cookie = value(&commit);
    let s = e
        .mgr
        .load_with_csrf(Some(&cookie), Some(&csrf))
        .await
        .unwrap();
    assert!(
        s.verify_csrf(&token),
        "an anonymous session keeps the cookie's secret"
    );
    // After logout the visitor is anonymous again: its tokens come from a CSRF cookie.
    let c = e.login(None, "alice").await;
    let mut s = e.load(&c).await;
    let logged_in_token = s.csrf_token().unwrap();
    s.logout();
    let after = s.csrf_token().unwrap();
    assert!(!s.verify_csrf(&logged_in_token));
    assert!(s.verify_csrf(&after));
    let commit = e.mgr.commit(s).await.unwrap();
    assert_eq!(commit.cookie, CookieUpdate::Remove);
    let csrf = csrf_value(&commit);
    let s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
    assert!(s.verify_csrf(&after));
}

#[tokio::test]
async fn an_old_csrf_cookie_in_use_is_reissued_with_the_same_secret() {
    let e = env(Mode::Server);
    let mut s = e.mgr.load(None).await.unwrap();
    let token = s.csrf_token().unwrap();
    let csrf = csrf_value(&e.mgr.commit(s).await.unwrap());
    // Past half its life, a page that renders a token gets the cookie again, so a form
    // rendered now does not die with the old cookie.
    e.clock.advance(Duration::from_secs(7 * 3600));
    let mut s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
    assert!(s.verify_csrf(&token));
    let fresh_token = s.csrf_token().unwrap();
    let fresh = csrf_value(&e.mgr.commit(s).await.unwrap());
    assert_ne!(fresh, csrf);
    let s = e.mgr.load_with_csrf(None, Some(&fresh)).await.unwrap();
    assert!(s.verify_csrf(&token) && s.verify_csrf(&fresh_token));
    // A request that renders no token leaves the cookie alone.
    let s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
    assert_eq!(
        e.mgr.commit(s).await.unwrap().csrf_cookie,
        CookieUpdate::Keep
    );
    // Expired: gone, and removed.
    e.clock.advance(Duration::from_secs(6 * 3600));
    let s = e.mgr.load_with_csrf(None, Some(&csrf)).await.unwrap();
    assert!(!s.verify_csrf(&token));
    assert_eq!(
        e.mgr.commit(s).await.unwrap().csrf_cookie,
        CookieUpdate::Remove
    );
    assert!(e.store.is_empty());
}

// ---- hybrid mode binds the data's version ----

#[tokio::test]
async fn hybrid_refuses_an_older_cookie_of_the_same_session() {
    let e = env(Mode::Hybrid);
    let a = e.login(None, "alice").await;
    let mut s = e.load(&a).await;
    s.insert("cart", &vec![1u32]).unwrap();
    let b = value(&e.mgr.commit(s).await.unwrap());
    // Replaying A (the data before the change) is refused, and its cookie removed.
    let s = e.load(&a).await;
    assert!(
        s.is_new(),
        "an older cookie of the same live id was accepted"
    );
    assert_eq!(s.user_id(), None);
    assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Remove);
    // B is the session.
    let mut s = e.load(&b).await;
    assert_eq!(s.user_id(), Some("alice"));
    assert_eq!(s.get::<Vec<u32>>("cart").unwrap(), Some(vec![1]));
    // A removal is a change too: B dies when C is issued.
    assert!(s.remove("cart").unwrap());
    let c = value(&e.mgr.commit(s).await.unwrap());
    assert!(
        e.load(&b).await.is_new(),
        "a cookie holding removed data was accepted"
    );
    let s = e.load(&c).await;
    assert_eq!(s.get::<Vec<u32>>("cart").unwrap(), None);
    // A request that changes nothing keeps C valid (and sets no cookie).
    let commit = e.mgr.commit(s).await.unwrap();
    assert_eq!(commit.cookie, CookieUpdate::Keep);
    assert_eq!(e.load(&c).await.user_id(), Some("alice"));
    // An anonymous hybrid session binds its version too.
    let x = e.new_session().await;
    let mut s = e.load(&x).await;
    s.insert("k", &2).unwrap();
    let y = value(&e.mgr.commit(s).await.unwrap());
    assert!(e.load(&x).await.is_new());
    assert_eq!(e.load(&y).await.get::<u32>("k").unwrap(), Some(2));
}

#[tokio::test]
async fn hybrid_server_record_holds_the_live_id_and_a_version_but_no_data() {
    let e = env(Mode::Hybrid);
    let c = e.login(None, "alice").await;
    let mut s = e.load(&c).await;
    s.insert("card", "4111-1111-1111-1111").unwrap();
    s.flash(Level::Info, "a flash message");
    let c2 = value(&e.mgr.commit(s).await.unwrap());
    let s = e.load(&c2).await;
    let hash = s.id_hash().unwrap();
    let record = e.store.load(&hash, e.clock_now()).await.unwrap().unwrap();
    assert_eq!(record.user_id.as_deref(), Some("alice"));
    assert!(
        record.data.is_empty(),
        "the server record holds data: {record:?}"
    );
    assert_eq!(record.version, 2, "one data change, one version");
    let bytes = record.encode().unwrap();
    for secret in [&b"4111-1111"[..], b"a flash message", b"__cloakroom.csrf"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "the stored record holds session data"
        );
    }
    // The data is in the cookie only.
    assert_eq!(
        s.get::<String>("card").unwrap().as_deref(),
        Some("4111-1111-1111-1111")
    );
}

// ---- client mode: logout vs logout_everywhere ----

#[tokio::test]
async fn client_logout_leaves_a_copied_cookie_valid_but_logout_everywhere_ends_it() {
    let e = env(Mode::Client);
    let c = e.login(None, "alice").await;
    let copy = c.clone();
    let mut s = e.load(&c).await;
    s.logout();
    assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Remove);
    // What logout cannot do in client mode: the server has nothing to forget.
    assert_eq!(
        e.load(&copy).await.user_id(),
        Some("alice"),
        "a copy of a logged-out client cookie stays valid until it expires"
    );
    // logout_everywhere bumps the user's epoch: every cookie of the user dies.
    let other_device = e.login(None, "alice").await;
    let bob = e.login(None, "bob").await;
    let mut s = e.load(&copy).await;
    e.mgr.logout_everywhere(&mut s).await.unwrap();
    assert!(s.is_destroyed());
    assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Remove);
    assert!(e.load(&copy).await.is_new(), "the copied cookie survived");
    assert!(e.load(&c).await.is_new());
    assert!(e.load(&other_device).await.is_new());
    assert_eq!(e.load(&bob).await.user_id(), Some("bob"));
    // A new login works.
    let again = e.login(None, "alice").await;
    assert_eq!(e.load(&again).await.user_id(), Some("alice"));
}

#[tokio::test]
async fn logout_everywhere_ends_every_session_of_the_user_in_every_mode() {
    for mode in MODES {
        let e = env(mode);
        let a1 = e.login(None, "alice").await;
        let a2 = e.login(None, "alice").await;
        let bob = e.login(None, "bob").await;
        let mut s = e.load(&a1).await;
        let n = e.mgr.logout_everywhere(&mut s).await.unwrap();
        if mode != Mode::Client {
            assert_eq!(n, 2, "{mode:?}");
        }
        assert_eq!(e.mgr.commit(s).await.unwrap().cookie, CookieUpdate::Remove);
        assert!(e.load(&a1).await.is_new(), "{mode:?}");
        assert!(e.load(&a2).await.is_new(), "{mode:?}");
        assert_eq!(e.load(&bob).await.user_id(), Some("bob"), "{mode:?}");
        // Anonymous: nothing to end.
        let mut anon = e.mgr.load(None).await.unwrap();
        assert_eq!(e.mgr.logout_everywhere(&mut anon).await.unwrap(), 0);
    }
}

// ---- commits: the store applies a request's changes atomically ----

/// A store whose `apply` is a plain read-modify-write: load, merge, write the whole record
/// back (delete, then create), with no lock and no version check. Sequentially it is right;
/// concurrently it loses keys and brings deleted sessions back.
#[derive(Clone)]
struct ReadModifyWrite;

#[async_trait]
impl Twist for ReadModifyWrite {
    async fn apply(
        &self,
        inner: &MemoryStore,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let Some(current) = inner.load(id, now).await? else {
            return Err(Error::not_found());
        };
        // The gap every non-atomic read-modify-write has: other writers run here.
        tokio::task::yield_now().await;
        let next = cloakroom::apply_changes(current, changes, now, idle_deadline)?;
        inner.delete(id).await?;
        inner.create(&next, next.last_seen).await?;
        Ok(Applied::new(next.version, next.idle_deadline))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_catches_a_non_atomic_apply() {
    let message = conformance_failure(
        ReadModifyWrite,
        "the suite passed a store whose apply is not atomic",
    )
    .await;
    assert!(
        message.contains("apply_race_64_tasks_every_key_kept"),
        "{message}"
    );
    assert!(
        message.contains("apply_racing_a_delete_never_revives"),
        "{message}"
    );
    // Sequentially it does the right thing.
    assert!(
        !message.contains("apply_sets_and_removes_keys_on_the_latest_data"),
        "{message}"
    );
    assert!(
        !message.contains("apply_of_missing_deleted_or_expired_is_not_found"),
        "{message}"
    );
}

/// A store whose `apply` forgets the rules that are not about concurrency: it shortens the
/// idle deadline to what was asked and does not count the version.
#[derive(Clone)]
struct CarelessApply;

#[async_trait]
impl Twist for CarelessApply {
    async fn apply(
        &self,
        inner: &MemoryStore,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let applied = inner.apply(id, changes, now, idle_deadline).await?;
        let mut r = inner.load(id, now).await?.expect("just applied");
        r.idle_deadline = idle_deadline;
        r.last_seen = now;
        r.version = applied.version - 1;
        inner.delete(id).await?;
        inner.create(&r, r.last_seen).await?;
        Ok(Applied::new(r.version, r.idle_deadline))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_catches_an_apply_that_shortens_or_keeps_the_version() {
    let message = conformance_failure(CarelessApply, "the suite passed a careless apply").await;
    assert!(
        message.contains("apply_sets_and_removes_keys_on_the_latest_data"),
        "{message}"
    );
    assert!(
        message.contains("apply_slides_but_never_shortens_or_passes_the_absolute_deadline"),
        "{message}"
    );
}

/// The default `apply` (compare-and-swap over load and update) is correct, only slower: a
/// store whose `apply` is [`cloakroom::apply_by_compare_and_swap`], as the trait's default
/// `apply` is, passes the whole suite.
#[derive(Clone)]
struct CompareAndSwapApply;

#[async_trait]
impl Twist for CompareAndSwapApply {
    async fn apply(
        &self,
        inner: &MemoryStore,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        cloakroom::apply_by_compare_and_swap(inner, id, changes, now, idle_deadline).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_compare_and_swap_apply_passes_conformance() {
    conformance::run(|| async { Twisted::new(CompareAndSwapApply) }).await;
}

/// Counts what the session layer asks of the store.
#[derive(Default)]
struct Counts {
    applies: AtomicUsize,
    updates: AtomicUsize,
    touches: AtomicUsize,
}

#[async_trait]
impl Twist for Counts {
    async fn update(&self, inner: &MemoryStore, r: &Record, now: u64) -> Result<u64, Error> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        inner.update(r, now).await
    }
    async fn apply(
        &self,
        inner: &MemoryStore,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        self.applies.fetch_add(1, Ordering::SeqCst);
        inner.apply(id, changes, now, idle_deadline).await
    }
    async fn touch(
        &self,
        inner: &MemoryStore,
        id: &IdHash,
        now: u64,
        idle: u64,
    ) -> Result<(), Error> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        inner.touch(id, now, idle).await
    }
}

type CountingStore = Twisted<Counts>;

fn counting_env() -> (Arc<CountingStore>, SessionManager) {
    let store = Arc::new(CountingStore::default());
    let mgr = SessionManager::new(&KeyRing::generate().unwrap(), store.clone())
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(T0)));
    (store, mgr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_overlapping_commits_each_make_one_apply_and_all_succeed() {
    let (store, mgr) = counting_env();
    let mgr = Arc::new(mgr);
    let mut s = mgr.load(None).await.unwrap();
    s.insert("start", &0).unwrap();
    let cookie = value(&mgr.commit(s).await.unwrap());
    // All 64 read the same version before any commits.
    let mut sessions = Vec::new();
    for i in 0..64 {
        let mut s = mgr.load(Some(&cookie)).await.unwrap();
        s.insert(&format!("k{i}"), &i).unwrap();
        sessions.push(s);
    }
    let handles: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let mgr = mgr.clone();
            tokio::spawn(async move { mgr.commit(s).await })
        })
        .collect();
    for h in handles {
        let commit = h.await.unwrap().expect("no overlapping commit fails");
        assert_eq!(commit.cookie, CookieUpdate::Keep);
        assert!(!commit.ended_concurrently);
    }
    assert_eq!(
        store.twist.applies.load(Ordering::SeqCst),
        64,
        "one apply each"
    );
    assert_eq!(
        store.twist.updates.load(Ordering::SeqCst),
        0,
        "no compare-and-swap loop"
    );
    let s = mgr.load(Some(&cookie)).await.unwrap();
    assert_eq!(s.keys().len(), 65, "{:?}", s.keys());
}

#[tokio::test]
async fn setting_a_key_to_the_value_it_has_writes_nothing() {
    let (store, mgr) = counting_env();
    let mut s = mgr.load(None).await.unwrap();
    s.insert("k", &1).unwrap();
    s.insert("list", &vec!["a", "b"]).unwrap();
    let cookie = value(&mgr.commit(s).await.unwrap());
    let mut s = mgr.load(Some(&cookie)).await.unwrap();
    s.insert("k", &1).unwrap();
    s.insert("list", &vec!["a", "b"]).unwrap();
    assert!(!s.remove("absent").unwrap());
    // Changed and changed back within the request: no change either.
    s.insert("k", &2).unwrap();
    s.insert("k", &1).unwrap();
    assert_eq!(mgr.commit(s).await.unwrap().cookie, CookieUpdate::Keep);
    assert_eq!(
        store.twist.applies.load(Ordering::SeqCst),
        0,
        "a write happened"
    );
    assert_eq!(
        store.twist.updates.load(Ordering::SeqCst),
        0,
        "a write happened"
    );
    assert_eq!(
        store.twist.touches.load(Ordering::SeqCst),
        0,
        "a write happened"
    );
    // A real change is written, once.
    let mut s = mgr.load(Some(&cookie)).await.unwrap();
    s.insert("k", &3).unwrap();
    mgr.commit(s).await.unwrap();
    assert_eq!(store.twist.applies.load(Ordering::SeqCst), 1);
    let s = mgr.load(Some(&cookie)).await.unwrap();
    assert_eq!(s.get::<u32>("k").unwrap(), Some(3));
}

#[tokio::test]
async fn a_commit_to_a_session_deleted_meanwhile_is_dropped_not_recreated() {
    let (store, mgr) = counting_env();
    let mut s = mgr.load(None).await.unwrap();
    s.insert("k", &1).unwrap();
    let cookie = value(&mgr.commit(s).await.unwrap());
    let mut slow = mgr.load(Some(&cookie)).await.unwrap();
    let id = slow.id_hash().unwrap();
    assert!(store.delete(&id).await.unwrap());
    slow.insert("late", &1).unwrap();
    let commit = mgr.commit(slow).await.unwrap();
    assert!(commit.ended_concurrently);
    assert_eq!(commit.cookie, CookieUpdate::Remove);
    assert!(store.inner.is_empty(), "the session came back");
}

// ---- what a commit has to write ----

#[tokio::test]
async fn has_changes_is_true_only_for_a_write_or_a_verb() {
    for mode in MODES {
        let e = env(mode);
        let cookie = e.new_session().await;
        let mut s = e.load(&cookie).await;
        assert!(!s.has_changes(), "{mode:?}: a fresh load");
        let _ = s.get::<u32>("k").unwrap();
        let _ = s.csrf_token().unwrap();
        assert!(
            !s.has_changes(),
            "{mode:?}: reads and a CSRF token for a session without a user"
        );
        s.insert("k", &1).unwrap();
        assert!(!s.has_changes(), "{mode:?}: a key set to the value it has");
        s.insert("k", &2).unwrap();
        assert!(s.has_changes(), "{mode:?}: a key changed");
        for verb in [
            Session::logout as fn(&mut Session),
            |s: &mut Session| s.cycle_id().unwrap(),
            |s: &mut Session| s.login("ada", Device::new()).unwrap(),
        ] {
            let mut s = e.load(&cookie).await;
            verb(&mut s);
            assert!(s.has_changes(), "{mode:?}: a verb");
        }
    }
}
