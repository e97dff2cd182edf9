//! One user's overlapping requests (issue 12), on every store: 64 keep-alive connections over
//! real TCP to a real axum server, each POSTing a key of its own to ONE session, back to back,
//! for 10 seconds. Every answer must be 2xx, and afterwards the session must hold each
//! connection's key with the last value that connection wrote.
//!
//! Nothing here is timed: the run lasts a fixed time and only what the server answered and
//! kept is checked (the rate is printed for the record; the benchmark
//! `cargo bench -p cloakroom-tower --bench tower` measures it side by side).
//!
//! `CLOAKROOM_CONTENDED_SECS` changes the 10 seconds. The servers come from
//! `scripts/test --setup-only`; a missing one fails the test with the command that starts it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use cloakroom::store::{Error as StoreError, ErrorKind};
use cloakroom::Applied;
use cloakroom_stores::{FileStore, SqliteStore};
use cloakroom_tower::{async_trait, Error, KeyRing, MemoryStore, Session, SessionLayer, Store};

mod support;

use support::hooked::{Applying, Hooked, Hooks};
use support::server::{first_write_cookie, serve};
use support::{on_postgres, redis, set_key, unique};

const CONNECTIONS: usize = 64;

fn run_for() -> Duration {
    let secs = std::env::var("CLOAKROOM_CONTENDED_SECS")
        .ok()
        .map(|s| {
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("CLOAKROOM_CONTENDED_SECS={s:?} is not a number"))
        })
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

// ---------------------------------------------------------------- the application

/// Every key of the session and its value, one `key=value` a line.
async fn dump(session: Session) -> Result<String, Error> {
    let mut out = String::new();
    for key in session.keys() {
        let value = session.get::<String>(&key)?.unwrap_or_default();
        out.push_str(&format!("{key}={value}\n"));
    }
    Ok(out)
}

async fn serve_on(store: Arc<dyn Store>) -> SocketAddr {
    let layer = SessionLayer::builder()
        .key_ring(&KeyRing::generate().unwrap())
        .store(store)
        .insecure_plain_http_for_local_development()
        .build()
        .unwrap();
    let router = Router::new()
        .route("/set/{key}/{value}", post(set_key))
        .route("/dump", get(dump))
        .layer(layer);
    serve(router).await
}

// ---------------------------------------------------------------- the load and the check

/// What one run saw.
struct Outcome {
    /// Answers received, 2xx or not.
    answers: usize,
    /// Answers that were not 2xx, and requests that got no answer; the first few described.
    failures: usize,
    failure_samples: Vec<String>,
    /// Connections whose key is missing or holds another value than the last one written:
    /// (key, last value written with a 2xx answer, value found).
    lost: Vec<(String, u64, Option<String>)>,
}

impl Outcome {
    fn describe(&self, store: &str, secs: f64) -> String {
        format!(
            "{store}: {} answers in {secs:.1} s ({:.0}/s), {} not 2xx {:?}, {} of {CONNECTIONS} keys lost or stale {:?}",
            self.answers,
            self.answers as f64 / secs,
            self.failures,
            self.failure_samples,
            self.lost.len(),
            &self.lost[..self.lost.len().min(5)],
        )
    }
}

/// Runs the load against a server on `store` for `run_for` and reads the session back.
async fn contend(store: Arc<dyn Store>, run_for: Duration) -> Outcome {
    let addr = serve_on(store).await;
    let base = format!("http://{addr}");
    // The session every connection writes to.
    let client = reqwest::Client::new();
    let cookie =
        first_write_cookie(&client, &format!("{base}/set/start/1"), "POST /set/start/1").await;

    let end = Instant::now() + run_for;
    let mut connections = tokio::task::JoinSet::new();
    for i in 0..CONNECTIONS {
        let (base, cookie) = (base.clone(), cookie.clone());
        connections.spawn(async move {
            // One client, one keep-alive connection: its requests go one after the other.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (mut answers, mut failures, mut samples) = (0usize, 0usize, Vec::new());
            let mut last_kept = None;
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let sent = client
                    .post(format!("{base}/set/w{i}/{n}"))
                    .header("cookie", &cookie)
                    .send()
                    .await;
                match sent {
                    Ok(reply) => {
                        answers += 1;
                        let status = reply.status();
                        let body = reply.text().await.unwrap_or_default();
                        if status.is_success() {
                            last_kept = Some(n);
                        } else {
                            failures += 1;
                            if samples.len() < 3 {
                                samples.push(format!("{status} {body}"));
                            }
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if samples.len() < 3 {
                            samples.push(format!("no answer: {e}"));
                        }
                    }
                }
            }
            (i, answers, failures, samples, last_kept)
        });
    }
    let mut outcome = Outcome {
        answers: 0,
        failures: 0,
        failure_samples: Vec::new(),
        lost: Vec::new(),
    };
    let mut written = BTreeMap::new();
    while let Some(joined) = connections.join_next().await {
        let (i, answers, failures, samples, last_kept) = joined.unwrap();
        outcome.answers += answers;
        outcome.failures += failures;
        for s in samples {
            if outcome.failure_samples.len() < 5 {
                outcome.failure_samples.push(s);
            }
        }
        if let Some(n) = last_kept {
            written.insert(format!("w{i}"), n);
        }
    }

    let reply = client
        .get(format!("{base}/dump"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("the server answers");
    assert!(
        reply.status().is_success(),
        "reading back: {}",
        reply.status()
    );
    let text = reply.text().await.unwrap();
    let kept: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        kept.get("start"),
        Some(&"1"),
        "the first key was lost: {text}"
    );
    for (key, n) in written {
        let found = kept.get(key.as_str()).map(|v| (*v).to_owned());
        if found.as_deref() != Some(n.to_string().as_str()) {
            outcome.lost.push((key, n, found));
        }
    }
    outcome
}

/// The test proper: no failed answer, no lost or stale key.
async fn every_write_kept(name: &str, store: Arc<dyn Store>) {
    let secs = run_for();
    let outcome = contend(store, secs).await;
    let report = outcome.describe(name, secs.as_secs_f64());
    eprintln!("{report}");
    assert!(outcome.answers > 0, "no answer at all: {report}");
    assert_eq!(outcome.failures, 0, "{report}");
    assert!(outcome.lost.is_empty(), "{report}");
}

// ---------------------------------------------------------------- every store

/// `name` in a new temporary directory, which goes when the directory is dropped.
fn temp_path(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sixty_four_connections_writing_one_session_keep_every_key() {
    every_write_kept("memory", Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sixty_four_connections_writing_one_session_keep_every_key() {
    let (_dir, path) = temp_path("sessions");
    every_write_kept("file", Arc::new(FileStore::open(path).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sixty_four_connections_writing_one_session_keep_every_key() {
    let (_dir, path) = temp_path("sessions.db");
    every_write_kept("SQLite", Arc::new(SqliteStore::open(path).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sixty_four_connections_writing_one_session_keep_every_key() {
    every_write_kept("Redis", redis("cloakroom-contended:").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sixty_four_connections_writing_one_session_keep_every_key() {
    on_postgres("contended_", |store| every_write_kept("PostgreSQL", store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_sixty_four_connections_writing_one_session_keep_every_key() {
    let addr =
        std::env::var("CLOAKROOM_TEST_MEMCACHED").unwrap_or_else(|_| "127.0.0.1:11211".into());
    let store = cloakroom_stores::MemcachedStore::builder(addr.as_str())
        .with_prefix(format!("{}:", unique("cloakroom-contended:")))
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "memcached is not reachable at {addr} ({e}); start it: scripts/test --setup-only (or: apt-get install -y memcached && memcached -d -u memcache -l 127.0.0.1 -p 11211), or set CLOAKROOM_TEST_MEMCACHED"
            )
        });
    every_write_kept("memcached", Arc::new(store)).await;
}

// ---------------------------------------------------------------- the check can fail

/// A broken twin of a store (wrapped in [`Hooked`]): its `apply` reads the record, lets other
/// tasks run, merges the changes into what it read and writes the whole record back over
/// whatever is stored by then (last writer wins). Alone it is right; overlapping, it loses
/// other writers' keys.
struct ReadModifyWrite;

#[async_trait]
impl Hooks for ReadModifyWrite {
    async fn apply(store: &Hooked<Self>, call: Applying<'_>) -> Result<Applied, StoreError> {
        let (id, now) = (call.id, call.now);
        let Some(read) = store.inner.load(id, now).await? else {
            return Err(StoreError::not_found());
        };
        // The gap of every read-modify-write that is not atomic in the store.
        tokio::task::yield_now().await;
        let mut next = cloakroom::apply_changes(read, call.changes, now, call.idle_deadline)?;
        loop {
            let Some(latest) = store.inner.load(id, now).await? else {
                return Err(StoreError::not_found());
            };
            next.version = latest.version;
            match store.inner.update(&next, now).await {
                Ok(version) => return Ok(Applied::new(version, next.idle_deadline)),
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The same load on the broken twin loses keys: the check above catches a store whose
/// commit is a read-modify-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_modify_write_commit_loses_keys_under_the_same_load() {
    let secs = Duration::from_secs(2);
    let twin = Hooked::new(Arc::new(MemoryStore::new()), ReadModifyWrite);
    let outcome = contend(twin, secs).await;
    let report = outcome.describe("read-modify-write twin", secs.as_secs_f64());
    eprintln!("{report}");
    assert!(
        !outcome.lost.is_empty(),
        "the twin kept every key, so the check cannot tell: {report}"
    );
}
