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

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use cloakroom::store::ErrorKind;
use cloakroom::{Applied, Changes, IdHash, Record};
use cloakroom_tower::{async_trait, Error, KeyRing, MemoryStore, Session, SessionLayer, Store};

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

async fn set_key(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<&'static str, Error> {
    session.insert(&key, &value)?;
    Ok("ok")
}

/// Every key of the session and its value, one `key=value` a line.
async fn dump(session: Session) -> Result<String, Error> {
    let mut out = String::new();
    for key in session.keys() {
        let value = session.get::<String>(&key)?.unwrap_or_default();
        out.push_str(&format!("{key}={value}\n"));
    }
    Ok(out)
}

async fn serve(store: Arc<dyn Store>) -> SocketAddr {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
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
    let addr = serve(store).await;
    let base = format!("http://{addr}");
    // The session every connection writes to.
    let client = reqwest::Client::new();
    let first = client
        .post(format!("{base}/set/start/1"))
        .send()
        .await
        .expect("the server answers");
    assert!(first.status().is_success(), "{}", first.status());
    let cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("the first write sets the session cookie")
        .to_owned();
    first.bytes().await.unwrap();

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sixty_four_connections_writing_one_session_keep_every_key() {
    every_write_kept("memory", Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sixty_four_connections_writing_one_session_keep_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = cloakroom_stores::FileStore::open(dir.path().join("sessions"))
        .await
        .unwrap();
    every_write_kept("file", Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sixty_four_connections_writing_one_session_keep_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = cloakroom_stores::SqliteStore::open(dir.path().join("sessions.db"))
        .await
        .unwrap();
    every_write_kept("SQLite", Arc::new(store)).await;
}

/// A name no other test run uses, for key prefixes and schemas on the shared servers.
fn unique(base: &str) -> String {
    format!(
        "{base}{}_{}",
        std::process::id(),
        &cloakroom::SessionId::generate().unwrap().hash().to_hex()[..12]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sixty_four_connections_writing_one_session_keep_every_key() {
    let url = std::env::var("CLOAKROOM_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let store = cloakroom_stores::RedisStore::builder(url.as_str())
        .with_prefix(format!("{}:", unique("cloakroom-contended:")))
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no Redis at {url} ({e}); start one with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no (or run scripts/test --setup-only), or set CLOAKROOM_TEST_REDIS"
            )
        });
    every_write_kept("Redis", Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sixty_four_connections_writing_one_session_keep_every_key() {
    let url = std::env::var("CLOAKROOM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".to_owned());
    let schema = unique("contended_");
    let store = cloakroom_stores::PostgresStore::builder(url.as_str())
        .with_schema(schema.clone())
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL at {url} ({e}); start it with scripts/test --setup-only, or set CLOAKROOM_TEST_POSTGRES")
        });
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // The schema goes whatever the outcome.
    let outcome = tokio::spawn(every_write_kept("PostgreSQL", Arc::new(store))).await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
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

/// A broken twin of a store: its `apply` reads the record, lets other tasks run, merges the
/// changes into what it read and writes the whole record back over whatever is stored by
/// then (last writer wins). Alone it is right; overlapping, it loses other writers' keys.
struct ReadModifyWrite(MemoryStore);

#[async_trait]
impl Store for ReadModifyWrite {
    async fn create(&self, r: &Record, now: u64) -> Result<(), cloakroom::store::Error> {
        self.0.create(r, now).await
    }
    async fn load(&self, id: &IdHash, now: u64) -> Result<Option<Record>, cloakroom::store::Error> {
        self.0.load(id, now).await
    }
    async fn update(&self, r: &Record, now: u64) -> Result<u64, cloakroom::store::Error> {
        self.0.update(r, now).await
    }
    async fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, cloakroom::store::Error> {
        let Some(read) = self.0.load(id, now).await? else {
            return Err(cloakroom::store::Error::not_found());
        };
        // The gap of every read-modify-write that is not atomic in the store.
        tokio::task::yield_now().await;
        let mut next = cloakroom::apply_changes(read, changes, now, idle_deadline)?;
        loop {
            let Some(latest) = self.0.load(id, now).await? else {
                return Err(cloakroom::store::Error::not_found());
            };
            next.version = latest.version;
            match self.0.update(&next, now).await {
                Ok(version) => return Ok(Applied::new(version, next.idle_deadline)),
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }
    async fn touch(&self, id: &IdHash, now: u64, idle: u64) -> Result<(), cloakroom::store::Error> {
        self.0.touch(id, now, idle).await
    }
    async fn delete(&self, id: &IdHash) -> Result<bool, cloakroom::store::Error> {
        self.0.delete(id).await
    }
    async fn sessions_of(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<Record>, cloakroom::store::Error> {
        self.0.sessions_of(user, now).await
    }
    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&IdHash>,
    ) -> Result<u64, cloakroom::store::Error> {
        self.0.revoke_user_sessions(user, except).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, cloakroom::store::Error> {
        self.0.user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, cloakroom::store::Error> {
        self.0.bump_user_epoch(user).await
    }
    async fn purge_expired(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<usize, cloakroom::store::Error> {
        self.0.purge_expired(now, limit).await
    }
}

/// The same load on the broken twin loses keys: the check above catches a store whose
/// commit is a read-modify-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_modify_write_commit_loses_keys_under_the_same_load() {
    let secs = Duration::from_secs(2);
    let outcome = contend(Arc::new(ReadModifyWrite(MemoryStore::new())), secs).await;
    let report = outcome.describe("read-modify-write twin", secs.as_secs_f64());
    eprintln!("{report}");
    assert!(
        !outcome.lost.is_empty(),
        "the twin kept every key, so the check cannot tell: {report}"
    );
}
