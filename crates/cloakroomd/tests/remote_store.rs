//! The remote store (`cloakroom-stores`, feature `remote`) against a real daemon started in
//! process: the whole store conformance suite, a daemon that is not there, a daemon that
//! restarts, many concurrent requests from one store, and the axum session layer on top.
//!
//! Every daemon here gets a temporary data directory of its own: its SQLite file, its key
//! ring and its ipc socket live there, so these tests share nothing with other tests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom::conformance::{self, Corruptible};
use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Changes, IdHash, Policy, Record, SessionId, Store, Value};
use cloakroom_stores::RemoteStore;

const T0: u64 = 1_700_000_000;

/// Starts a daemon on `dir` with its defaults (ipc socket and SQLite file in `dir`), the
/// session cache set to `cache` sessions.
async fn daemon(dir: &Path, cache: Option<usize>) -> cloakroomd::Running {
    let mut config = cloakroomd::Config::new(dir);
    config.cache_size = cache;
    cloakroomd::start(config)
        .await
        .unwrap_or_else(|e| panic!("cannot start cloakroomd in {}: {e}", dir.display()))
}

fn endpoint(dir: &Path) -> String {
    format!("ipc://{}", dir.join("cloakroomd.sock").display())
}

/// A remote store connected to the daemon on `dir`, giving up on a request after `timeout`.
async fn connect(dir: &Path, timeout: Duration) -> RemoteStore {
    RemoteStore::builder(endpoint(dir))
        .with_timeout(timeout)
        .connect()
        .await
        .expect("the remote store reaches the daemon")
}

/// A fresh daemon (session cache as `cache`) in a fresh directory, and a store on it.
async fn fresh(cache: Option<usize>) -> (RemoteStore, tempfile::TempDir, cloakroomd::Running) {
    let dir = tempfile::tempdir().unwrap();
    let running = daemon(dir.path(), cache).await;
    let store = connect(dir.path(), Duration::from_secs(10)).await;
    (store, dir, running)
}

/// Damages the SQLite row of `id` in `db` (a record that is not MessagePack).
fn corrupt_row(db: &Path, id: IdHash) -> Result<(), Error> {
    let damage = "UPDATE sessions SET record = x'016e6f74206d73677061636b' WHERE id = ?1";
    rusqlite::Connection::open(db)
        .and_then(|conn| conn.execute(damage, [id.as_bytes().as_slice()]))
        .map(drop)
        .map_err(|e| Error::unavailable("inject_corrupt", e))
}

/// `load` of `id` fails as unavailable, and within 5 s.
async fn assert_unavailable_soon(store: &RemoteStore, id: &IdHash) {
    let started = Instant::now();
    let err = store.load(id, T0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "hung for {:?}",
        started.elapsed()
    );
}

/// A daemon and its directory, kept alive as long as the store under test.
struct Owned {
    _running: cloakroomd::Running,
    _dir: tempfile::TempDir,
}

/// The whole conformance suite, each case on a fresh daemon with a fresh SQLite file.
///
/// The daemon's session cache is off here: the corrupt-record case damages the SQLite file
/// behind the daemon's back, which a cache (coherent for the daemon's own writes only)
/// would hide. `conformance_with_the_daemon_cache_on_but_corruption` covers the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    conformance::run(|| async {
        let (store, dir, running) = fresh(Some(0)).await;
        let db = dir.path().join("sessions.db");
        let owned = Arc::new(Owned {
            _running: running,
            _dir: dir,
        });
        Corruptible::new(store, move |id: IdHash| {
            let (db, _owned) = (db.clone(), Arc::clone(&owned));
            async move { corrupt_row(&db, id) }
        })
    })
    .await;
}

/// The suite again with the daemon's default cache on. Only the corrupt-record case cannot
/// hold there (the cache answers from memory what the file no longer has), so its hook
/// reports the record as corrupt by deleting it in the daemon and failing, which the suite
/// counts as that one case failing: exactly one failure is expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_the_daemon_cache_on_but_corruption() {
    let outcome = tokio::spawn(conformance::run(|| async {
        let (store, dir, running) = fresh(None).await;
        let owned = Arc::new(Owned {
            _running: running,
            _dir: dir,
        });
        Corruptible::new(store, move |_id: IdHash| {
            let _owned = Arc::clone(&owned);
            async move {
                Err::<(), _>(Error::new(
                    ErrorKind::InvalidInput,
                    "not with the daemon's cache on",
                ))
            }
        })
    }))
    .await;
    let panic = outcome.expect_err("the corrupt-record case cannot pass with the cache on");
    let message = panic
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(
        message.starts_with("1 of ") && message.contains("corrupt_record_is_corrupt_error"),
        "other cases failed with the daemon's cache on:\n{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_is_not_there_is_unavailable_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = RemoteStore::builder(endpoint(dir.path()))
        .with_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let id = SessionId::generate().unwrap().hash();
    assert_unavailable_soon(&store, &id).await;
    // And a daemon that was there and stopped: the same.
    let running = daemon(dir.path(), None).await;
    assert_eq!(store.load(&id, T0).await.unwrap(), None);
    running.shutdown().await;
    assert_unavailable_soon(&store, &id).await;
}

fn record(user: Option<&str>) -> Record {
    let mut r = Record::new(
        SessionId::generate().unwrap().hash(),
        T0,
        &Policy::default(),
    );
    r.user_id = user.map(str::to_owned);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_when_the_daemon_restarts_without_being_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let running = daemon(dir.path(), None).await;
    let store = connect(dir.path(), Duration::from_millis(500)).await;
    let r = record(Some("restart"));
    store.create(&r, r.last_seen).await.unwrap();
    running.shutdown().await;
    assert_eq!(
        store.load(&r.id_hash, T0).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    // The same directory: the same SQLite file and socket path.
    let _running = daemon(dir.path(), None).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let back = loop {
        match store.load(&r.id_hash, T0).await {
            Ok(back) => break back,
            Err(e) if e.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {}
            Err(e) => panic!("the store did not recover: {e}"),
        }
    };
    assert_eq!(back.as_ref(), Some(&r), "the record survived the restart");
    let mut changes = Changes::new();
    changes.set("after", Value::from("restart"));
    let applied = store
        .apply(&r.id_hash, &changes, T0 + 1, T0 + 1800)
        .await
        .unwrap();
    assert_eq!(applied.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests_from_one_store_are_all_answered_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let _running = daemon(dir.path(), None).await;
    let store = Arc::new(connect(dir.path(), Duration::from_secs(30)).await);
    const N: u64 = 1000;
    let tasks: Vec<_> = (0..N)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut r = record(Some(&format!("user-{}", n % 10)));
                r.data.insert("n".into(), Value::from(n));
                store.create(&r, r.last_seen).await?;
                let mut changes = Changes::new();
                changes.set("m", Value::from(n * 2));
                let applied = store.apply(&r.id_hash, &changes, T0 + 1, T0 + 1800).await?;
                let back = store.load(&r.id_hash, T0 + 2).await?;
                Ok::<_, Error>((n, applied.version, back))
            })
        })
        .collect();
    for t in tasks {
        let (n, version, back) = t.await.unwrap().unwrap();
        assert_eq!(version, 2);
        let back = back.expect("created a moment ago");
        assert_eq!(
            back.data.get("n"),
            Some(&Value::from(n)),
            "another caller's record"
        );
        assert_eq!(back.data.get("m"), Some(&Value::from(n * 2)));
    }
    for u in 0..10 {
        let sessions = store
            .sessions_of(&format!("user-{u}"), T0 + 2)
            .await
            .unwrap();
        assert_eq!(sessions.len() as u64, N / 10);
    }
    assert_eq!(store.in_flight(), 0);
}

/// The axum session layer, unchanged, on the daemon: a visit counter kept across requests
/// in the daemon's store, and 503 (never an anonymous visitor) while the daemon is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_layer_runs_on_the_remote_store() {
    use axum::routing::get;
    use axum::Router;
    use cloakroom_tower::{KeyRing, Session, SessionLayer};
    use tower::ServiceExt;

    async fn visits(session: Session) -> Result<String, cloakroom_tower::Error> {
        let n = session.get::<u64>("visits")?.unwrap_or(0) + 1;
        session.insert("visits", &n)?;
        Ok(n.to_string())
    }

    /// One GET of `/`: the status, the body and the cookie pair the response set, if any.
    async fn visit(app: &Router, cookie: Option<&str>) -> (u16, String, Option<String>) {
        let mut req = http::Request::builder().uri("/");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let req = req.body(axum::body::Body::empty()).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let set = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), set)
    }

    let dir = tempfile::tempdir().unwrap();
    let running = daemon(dir.path(), None).await;
    let store = connect(dir.path(), Duration::from_millis(500)).await;
    let layer = SessionLayer::builder()
        .key_ring(&KeyRing::generate().unwrap())
        .store(Arc::new(store))
        .build()
        .unwrap();
    let app = Router::new().route("/", get(visits)).layer(layer);

    let (status, body, set) = visit(&app, None).await;
    assert_eq!((status, body.as_str()), (200, "1"));
    let cookie = set.expect("the first visit sets the session cookie");
    for want in ["2", "3"] {
        let (status, body, _) = visit(&app, Some(&cookie)).await;
        assert_eq!(
            (status, body.as_str()),
            (200, want),
            "the count lives in the daemon"
        );
    }
    // The daemon holds exactly that one session.
    let db = rusqlite::Connection::open(dir.path().join("sessions.db")).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    // The daemon down: 503, not a fresh anonymous session.
    running.shutdown().await;
    let (status, _, set) = visit(&app, Some(&cookie)).await;
    assert_eq!(status, 503);
    assert!(set.is_none(), "no cookie is set while the store is down");
}
