//! The session cache ([`CachedStore`]) against the real backends.
//!
//! Per channel: another writer's change (another connection, standing in for another
//! process) is seen; a lost channel drops and bypasses the cache until it is back.
//!
//! And what issue 12 asks for: two application processes on one store, each with the
//! cache on; a logout or revocation through process A is refused by process B within
//! 10 ms, measured from A's acknowledged write to B's first refusal, over 50 trials (median
//! and p90 within 10 ms, every trial within 200 ms: see `revocation_within_10ms`). Process
//! B is this test binary run again (`helper_process`, driven over stdin/stderr). The broken
//! twin (B's cache without a channel) must keep serving the dead session, which shows the
//! measurement catches a cache that is not kept coherent.
//!
//! Servers: Redis on `CLOAKROOM_TEST_REDIS` (default `redis://127.0.0.1:6379`), PostgreSQL
//! on `CLOAKROOM_TEST_POSTGRES` (default `postgres://postgres:postgres@127.0.0.1:5432/test`);
//! start them with `scripts/test --setup-only`. Every test uses its own prefix, schema or
//! file.

#![allow(missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cloakroom::{Changes, IdHash, Record, Store, Value};
use cloakroom_stores::{CacheStats, CachedStore};
use common::unique;

const NOW: u64 = common::T0;
const START: &str = "scripts/test --setup-only (or: service redis-server start; \
                     service postgresql start; sudo -u postgres createdb test)";

fn record(user: &str) -> Record {
    let mut r = common::record(user);
    r.data.insert("cart".into(), Value::from(1));
    r
}

fn redis_url() -> String {
    std::env::var("CLOAKROOM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn postgres_url() -> String {
    std::env::var("CLOAKROOM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into())
}

/// What the tests need of a cache, whatever its store.
trait Cached: Store {
    fn cache_stats(&self) -> CacheStats;
    fn online(&self) -> bool;
}

impl<S: Store> Cached for CachedStore<S> {
    fn cache_stats(&self) -> CacheStats {
        CachedStore::cache_stats(self)
    }
    fn online(&self) -> bool {
        self.is_online()
    }
}

/// One store, named so that another process can open it too.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sqlite,
    Redis,
    Postgres,
}

impl Kind {
    fn parse(s: &str) -> Self {
        match s {
            "sqlite" => Self::Sqlite,
            "redis" => Self::Redis,
            "postgres" => Self::Postgres,
            _ => panic!("unknown kind {s}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Redis => "redis",
            Self::Postgres => "postgres",
        }
    }

    /// A fresh location: a file path, a key prefix, a schema.
    fn fresh(self, dir: &std::path::Path) -> String {
        match self {
            Self::Sqlite => dir.join("s.db").display().to_string(),
            Self::Redis => format!("{}:", unique("cachetest_")),
            Self::Postgres => unique("cachetest_"),
        }
    }

    async fn bare(self, at: &str) -> Arc<dyn Store> {
        match self {
            Self::Sqlite => Arc::new(cloakroom_stores::SqliteStore::open(at).await.unwrap()),
            Self::Redis => Arc::new(redis_store(at).await),
            Self::Postgres => Arc::new(postgres_store(at).await),
        }
    }

    /// A cache on the store at `at`; `blind`: without its channel (the broken twin).
    async fn cached(self, at: &str, blind: bool) -> Arc<dyn Cached> {
        let capacity = 1000;
        match self {
            Self::Sqlite => {
                let store = cloakroom_stores::SqliteStore::open(at).await.unwrap();
                if blind {
                    Arc::new(CachedStore::without_invalidation_for_tests(store, capacity).unwrap())
                } else {
                    Arc::new(CachedStore::sqlite(store, capacity).await.unwrap())
                }
            }
            Self::Redis => {
                let store = redis_store(at).await;
                if blind {
                    Arc::new(CachedStore::without_invalidation_for_tests(store, capacity).unwrap())
                } else {
                    Arc::new(
                        CachedStore::redis(store, &redis_url(), capacity)
                            .await
                            .unwrap(),
                    )
                }
            }
            Self::Postgres => {
                let store = postgres_store(at).await;
                if blind {
                    Arc::new(CachedStore::without_invalidation_for_tests(store, capacity).unwrap())
                } else {
                    Arc::new(
                        CachedStore::postgres(store, &postgres_url(), capacity)
                            .await
                            .unwrap(),
                    )
                }
            }
        }
    }

    /// Removes what the test created on a shared server.
    async fn cleanup(self, at: &str) {
        match self {
            Self::Sqlite => {}
            Self::Redis => {
                let mut conn = redis_raw().await;
                let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                    .arg(format!("{at}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(keys)
                        .exec_async(&mut conn)
                        .await
                        .unwrap();
                }
            }
            Self::Postgres => {
                postgres_raw()
                    .await
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {at} CASCADE"))
                    .await
                    .unwrap();
            }
        }
    }
}

async fn redis_store(prefix: &str) -> cloakroom_stores::RedisStore {
    let url = redis_url();
    cloakroom_stores::RedisStore::builder(&url)
        .with_prefix(prefix)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("Redis is not reachable at {url} ({e}); start it: {START}"))
}

async fn redis_raw() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is not reachable at {url} ({e}); start it: {START}"))
}

async fn postgres_store(schema: &str) -> cloakroom_stores::PostgresStore {
    let url = postgres_url();
    cloakroom_stores::PostgresStore::builder(&url)
        .with_schema(schema)
        .with_pool_size(4)
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {url} ({e:?}); start it: {START}")
        })
}

async fn postgres_raw() -> tokio_postgres::Client {
    let url = postgres_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {url} ({e}); start it: {START}")
        });
    tokio::spawn(conn);
    client
}

/// Polls `f` until it is true, for at most `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::task::yield_now().await;
    }
}

/// Loads `id` until the cache answers it from memory (the channel may first echo the write
/// that created it).
async fn until_hit(cache: &dyn Cached, id: &IdHash) -> Record {
    let start = Instant::now();
    loop {
        let hits = cache.cache_stats().hits;
        let got = cache.load(id, NOW).await.unwrap().expect("live record");
        if cache.cache_stats().hits > hits {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the cache never served {id} from memory"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---- per channel: another writer is seen ----

/// Another connection to the store (another process, the CLI) writes; the cache follows.
async fn sees_other_writers(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let at = kind.fresh(dir.path());
    let cache = kind.cached(&at, false).await;
    let other = kind.bare(&at).await;
    assert!(cache.online(), "{kind:?}: the channel is up");
    // Seen at all, and soon (the 10 ms property is measured by the two-process tests).
    let limit = TAIL;

    // A change of data.
    let r = record("alice");
    other.create(&r, r.last_seen).await.unwrap();
    until_hit(&*cache, &r.id_hash).await;
    let mut c = Changes::new();
    c.set("cart", Value::from(2));
    other.apply(&r.id_hash, &c, NOW, NOW + 60).await.unwrap();
    within(limit, "a change by another writer", || async {
        cache.load(&r.id_hash, NOW).await.unwrap().unwrap().data["cart"] == Value::from(2)
    })
    .await;

    // A logout.
    until_hit(&*cache, &r.id_hash).await;
    other.delete(&r.id_hash).await.unwrap();
    within(limit, "a logout by another writer", || async {
        cache.load(&r.id_hash, NOW).await.unwrap().is_none()
    })
    .await;

    // A revocation: the epoch and every session of the user.
    let r = record("bob");
    other.create(&r, r.last_seen).await.unwrap();
    until_hit(&*cache, &r.id_hash).await;
    assert_eq!(cache.user_epoch("bob").await.unwrap(), 0);
    let hits = cache.cache_stats().hits;
    assert_eq!(cache.user_epoch("bob").await.unwrap(), 0);
    assert_eq!(cache.cache_stats().hits, hits + 1, "the epoch is cached");
    other.bump_user_epoch("bob").await.unwrap();
    other.revoke_user_sessions("bob", None).await.unwrap();
    within(limit, "a revocation by another writer", || async {
        cache.user_epoch("bob").await.unwrap() == 1
            && cache.load(&r.id_hash, NOW).await.unwrap().is_none()
    })
    .await;
    kind.cleanup(&at).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cache_sees_other_writers() {
    sees_other_writers(Kind::Sqlite).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_sees_other_writers() {
    sees_other_writers(Kind::Redis).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cache_sees_other_writers() {
    sees_other_writers(Kind::Postgres).await;
}

// ---- per channel: losing it drops and bypasses the cache ----

/// `kill` cuts the channel's connection; while it is down, reads go to the store (so
/// another writer's change is seen without any invalidation); when it is back, the cache
/// serves again.
async fn lost_channel(kind: Kind, kill: impl std::future::Future<Output = ()>) {
    let dir = tempfile::tempdir().unwrap();
    let at = kind.fresh(dir.path());
    let cache = kind.cached(&at, false).await;
    let other = kind.bare(&at).await;
    let r = record("carol");
    other.create(&r, r.last_seen).await.unwrap();
    until_hit(&*cache, &r.id_hash).await;

    kill.await;
    within(Duration::from_secs(3), "the cache noticing", || async {
        !cache.online()
    })
    .await;
    assert!(cache.cache_stats().lost >= 1);
    // Down (for FIRST_RETRY, 100 ms): the cache was dropped, reads go to the store, so
    // another writer's change is seen though its invalidation went nowhere.
    let bypassed = cache.cache_stats().bypassed;
    let mut c = Changes::new();
    c.set("cart", Value::from(7));
    other.apply(&r.id_hash, &c, NOW, NOW + 60).await.unwrap();
    let got = cache.load(&r.id_hash, NOW).await.unwrap().unwrap();
    assert_eq!(got.data["cart"], Value::from(7));
    let got = cache.load(&r.id_hash, NOW).await.unwrap().unwrap();
    assert_eq!(got.data["cart"], Value::from(7));
    assert_eq!(
        cache.cache_stats().bypassed,
        bypassed + 2,
        "both reads went to the store"
    );
    // Back, starting empty.
    within(
        Duration::from_secs(5),
        "the channel coming back",
        || async { cache.online() },
    )
    .await;
    let got = until_hit(&*cache, &r.id_hash).await;
    assert_eq!(got.data["cart"], Value::from(7));
    other.delete(&r.id_hash).await.unwrap();
    within(TAIL, "a logout after the reconnect", || async {
        cache.load(&r.id_hash, NOW).await.unwrap().is_none()
    })
    .await;
    kind.cleanup(&at).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cache_bypasses_while_its_connection_is_lost() {
    // The cache names its connection after the store's prefix, which starts with
    // `cachetest_<pid>_` in this process.
    lost_channel(Kind::Redis, async {
        let mut conn = redis_raw().await;
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        let me = format!("name=cloakroom-cache:cachetest_{}_", std::process::id());
        let mut killed = 0;
        for line in list.lines().filter(|l| l.contains(&me)) {
            let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .exec_async(&mut conn)
                .await
                .unwrap();
            killed += 1;
        }
        assert!(
            killed >= 1,
            "no tracking connection named {me}… in CLIENT LIST"
        );
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cache_bypasses_while_its_connection_is_lost() {
    lost_channel(Kind::Postgres, async {
        let client = postgres_raw().await;
        let me = format!("cloakroom-cache:cachetest_{}_%", std::process::id());
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name LIKE $1",
                &[&me],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty(), "no LISTEN connection named {me}");
    })
    .await;
}

// ---- two application processes: the 10 ms revocation property ----

const HELPER: &str = "CLOAKROOM_CACHE_HELPER";
const TRIALS: usize = 50;
const BOUND: Duration = Duration::from_millis(10);
const TAIL: Duration = Duration::from_millis(200);
/// How long B is watched before its answer counts as stale for good.
const GIVE_UP: Duration = Duration::from_millis(300);

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Process B: opens its own cache on the store named in `CLOAKROOM_CACHE_HELPER`
/// (`kind<TAB>location<TAB>real|blind`), then for each `watch <id hash>` line on stdin loads
/// the session until the cache serves it from memory, says `@@ready`, and polls it (every
/// 100 µs) until it is refused: `@@gone <unix nanos>`, or `@@stale` after 300 ms. Without the
/// variable (a normal test run) it does nothing.
#[test]
fn helper_process() {
    let Ok(spec) = std::env::var(HELPER) else {
        return;
    };
    let mut parts = spec.split('\t');
    let kind = Kind::parse(parts.next().unwrap());
    let at = parts.next().unwrap().to_owned();
    let blind = parts.next() == Some("blind");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = rt.block_on(kind.cached(&at, blind));
    eprintln!("@@started");
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let Some(hex) = line.strip_prefix("watch ") else {
            break;
        };
        let id = IdHash::from_hex(hex.trim()).unwrap();
        rt.block_on(until_hit(&*cache, &id));
        eprintln!("@@ready");
        let start = Instant::now();
        loop {
            if rt.block_on(cache.load(&id, NOW)).unwrap().is_none() {
                eprintln!("@@gone {}", unix_nanos());
                break;
            }
            if start.elapsed() > GIVE_UP {
                eprintln!("@@stale");
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

struct Helper {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Helper {
    fn start(kind: Kind, at: &str, blind: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                HELPER,
                format!(
                    "{}\t{at}\t{}",
                    kind.name(),
                    if blind { "blind" } else { "real" }
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut helper = Self {
            child,
            stdin,
            stderr,
        };
        assert_eq!(helper.next(), "started");
        helper
    }

    /// The next protocol line (after `@@`).
    fn next(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "process B ended early");
            if let Some(at) = line.find("@@") {
                return line[at + 2..].trim().to_owned();
            }
            eprint!("B: {line}");
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// Runs `trials` logouts (even trials) and revocations (odd trials) through process A (this
/// one), each watched by process B. Returns each trial's delay from A's acknowledged write to
/// B's first refusal, `None` where B still served the session after [`GIVE_UP`].
fn two_processes(kind: Kind, blind_b: bool, trials: usize) -> Vec<Option<Duration>> {
    let dir = tempfile::tempdir().unwrap();
    let at = kind.fresh(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let a = rt.block_on(kind.cached(&at, false));
    let mut b = Helper::start(kind, &at, blind_b);
    let mut delays = Vec::new();
    for trial in 0..trials {
        let user = format!("user{trial}");
        let r = record(&user);
        rt.block_on(a.create(&r, r.last_seen)).unwrap();
        rt.block_on(until_hit(&*a, &r.id_hash));
        writeln!(b.stdin, "watch {}", r.id_hash.to_hex()).unwrap();
        assert_eq!(b.next(), "ready");
        if trial % 2 == 0 {
            // Logout: the session layer deletes the record.
            assert!(rt.block_on(a.delete(&r.id_hash)).unwrap());
        } else {
            // Revocation: what `SessionManager::revoke_user` does.
            rt.block_on(a.bump_user_epoch(&user)).unwrap();
            assert_eq!(rt.block_on(a.revoke_user_sessions(&user, None)).unwrap(), 1);
        }
        let acked = unix_nanos();
        // A refuses at once (its own write).
        assert!(rt.block_on(a.load(&r.id_hash, NOW)).unwrap().is_none());
        let answer = b.next();
        if let Some(at) = answer.strip_prefix("gone ") {
            let gone: u128 = at.parse().unwrap();
            let nanos = gone.saturating_sub(acked);
            delays.push(Some(Duration::from_nanos(u64::try_from(nanos).unwrap())));
        } else {
            assert_eq!(answer, "stale");
            delays.push(None);
        }
        if blind_b && delays.last() == Some(&None) {
            // One stale trial is all the broken twin has to show.
            break;
        }
    }
    drop(b);
    rt.block_on(kind.cleanup(&at));
    delays
}

fn revocation_within_10ms(kind: Kind) {
    let delays = two_processes(kind, false, TRIALS);
    let mut seen: Vec<Duration> = delays
        .iter()
        .map(|d| d.unwrap_or_else(|| panic!("{kind:?}: B served a revoked session for good")))
        .collect();
    seen.sort();
    let median = seen[seen.len() / 2];
    let p90 = seen[seen.len() * 9 / 10];
    let max = *seen.last().unwrap();
    eprintln!(
        "{kind:?}: {} trials, A's acknowledged logout/revocation to B's refusal: \
         median {median:?}, p90 {p90:?}, max {max:?}",
        seen.len()
    );
    assert!(
        median <= BOUND,
        "{kind:?}: median {median:?} > {BOUND:?} ({seen:?})"
    );
    assert!(p90 <= BOUND, "{kind:?}: p90 {p90:?} > {BOUND:?} ({seen:?})");
    // Every trial: far below what a missed invalidation costs (the heartbeat, 1 s; a blind
    // cache, forever). The 10 ms bound is the median's and the p90's: on this 2-core
    // machine shared with builds (load average ~20) a runnable thread can wait more than
    // 10 ms for a core, which no channel can help (as in cloakroomd's feed test).
    assert!(max <= TAIL, "{kind:?}: max {max:?} > {TAIL:?} ({seen:?})");
}

/// The broken twin: B's cache without its channel keeps serving the dead session.
fn blind_twin_is_caught(kind: Kind) {
    let delays = two_processes(kind, true, 4);
    assert!(
        delays.iter().any(Option::is_none),
        "{kind:?}: a cache without invalidation should have served a revoked session ({delays:?})"
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_two_processes_revocation_within_10ms() {
    revocation_within_10ms(Kind::Sqlite);
}

#[cfg(feature = "redis")]
#[test]
fn redis_two_processes_revocation_within_10ms() {
    revocation_within_10ms(Kind::Redis);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_two_processes_revocation_within_10ms() {
    revocation_within_10ms(Kind::Postgres);
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_two_processes_without_invalidation_serve_a_revoked_session() {
    blind_twin_is_caught(Kind::Sqlite);
}

#[cfg(feature = "redis")]
#[test]
fn redis_two_processes_without_invalidation_serve_a_revoked_session() {
    blind_twin_is_caught(Kind::Redis);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_two_processes_without_invalidation_serve_a_revoked_session() {
    blind_twin_is_caught(Kind::Postgres);
}

// ---- a commit writes through: one store round trip, and other writers still evict ----

/// Redis: load, commit, load costs one store read and one commit (the commit's record is
/// written through to the cache, and Redis does not echo the cache connection's own write),
/// and so does every further commit and load of the session.
#[cfg(feature = "redis")]
/// A load the cache makes on its own connection classifies Redis's errors as the store
/// does: a record key holding something else (WRONGTYPE) is `Corrupt` through the cache
/// too, not `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cached_load_of_a_key_that_is_not_ours_is_corrupt_as_in_the_store() {
    let prefix = format!("{}:", unique("cachetest_wrongtype"));
    let store = redis_store(&prefix).await;
    let cached = CachedStore::redis(store.clone(), &redis_url(), 100)
        .await
        .unwrap();
    let r = record("mallory");
    let mut conn = redis_raw().await;
    redis::cmd("SET")
        .arg(store.record_key(&r.id_hash))
        .arg("hello")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let bare = store.load(&r.id_hash, NOW).await.unwrap_err();
    assert_eq!(bare.kind(), cloakroom::store::ErrorKind::Corrupt, "{bare}");
    let through = cached.load(&r.id_hash, NOW).await.unwrap_err();
    assert_eq!(
        through.kind(),
        cloakroom::store::ErrorKind::Corrupt,
        "{through}"
    );
    assert_eq!(
        cached.cache_stats().bypassed,
        0,
        "the load went over the cache's connection"
    );
    redis::cmd("DEL")
        .arg(store.record_key(&r.id_hash))
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commit_then_load_costs_one_round_trip() {
    let at = Kind::Redis.fresh(std::path::Path::new("."));
    let cache = Kind::Redis.cached(&at, false).await;
    let other = Kind::Redis.bare(&at).await;
    let r = record("carol");
    other.create(&r, r.last_seen).await.unwrap();
    let before = cache.cache_stats();
    // A request: load (a store read), commit (a store write).
    assert!(cache.load(&r.id_hash, NOW).await.unwrap().is_some());
    let mut c = Changes::new();
    c.set("cart", Value::from(2));
    let applied = cache
        .apply(&r.id_hash, &c, NOW + 1, NOW + 61)
        .await
        .unwrap();
    // The next requests: each load is answered from memory, each commit is one write.
    for n in 3..6 {
        let got = cache.load(&r.id_hash, NOW + 1).await.unwrap().unwrap();
        assert_eq!(got.data["cart"], Value::from(n - 1));
        assert_eq!(got.version, applied.version + (n as u64 - 3));
        let mut c = Changes::new();
        c.set("cart", Value::from(n));
        cache
            .apply(&r.id_hash, &c, NOW + 1, NOW + 61)
            .await
            .unwrap();
    }
    let got = cache.load(&r.id_hash, NOW + 1).await.unwrap().unwrap();
    let after = cache.cache_stats();
    assert_eq!(
        after.misses - before.misses,
        1,
        "store reads for 4 loads around 4 commits: {before:?} -> {after:?}"
    );
    assert_eq!(after.hits - before.hits, 4);
    // What the cache serves is what the store holds.
    assert_eq!(Some(got), other.load(&r.id_hash, NOW + 1).await.unwrap());
    Kind::Redis.cleanup(&at).await;
}

/// Redis: another connection (another process) writes the session while this process
/// commits it, before, at the same moment or just after; whichever order the server ran
/// them in, the cache ends up serving what the store holds (a write of another process is
/// never hidden by a written-through commit), and a logout racing a commit is refused.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commit_racing_another_writer_still_evicts() {
    let at = Kind::Redis.fresh(std::path::Path::new("."));
    let cache = Kind::Redis.cached(&at, false).await;
    let other = Kind::Redis.bare(&at).await;
    for i in 0..60i64 {
        let r = record("dave");
        other.create(&r, r.last_seen).await.unwrap();
        until_hit(&*cache, &r.id_hash).await;
        let t = NOW + 1 + i as u64;
        let mut mine = Changes::new();
        mine.set("mine", Value::from(i));
        let theirs = async {
            match i % 3 {
                0 => {
                    let mut c = Changes::new();
                    c.set("theirs", Value::from(i));
                    other.apply(&r.id_hash, &c, t, t + 90).await.map(|_| ())
                }
                // A touch changes no version: only the invalidation can tell.
                1 => other.touch(&r.id_hash, t + 1, t + 120).await,
                _ => other.delete(&r.id_hash).await.map(|_| ()),
            }
        };
        // Sometimes theirs is sent first, sometimes ours.
        let ours = cache.apply(&r.id_hash, &mine, t, t + 60);
        let (a, b) = if i % 2 == 0 {
            tokio::join!(ours, theirs)
        } else {
            let (b, a) = tokio::join!(theirs, ours);
            (a, b)
        };
        b.unwrap();
        if i % 3 == 2 {
            // The logout may have come first (then the commit finds nothing).
            if let Err(e) = a {
                assert_eq!(e.kind(), cloakroom::store::ErrorKind::NotFound);
            }
        } else {
            a.unwrap();
        }
        let truth = other.load(&r.id_hash, t).await.unwrap();
        within(
            TAIL,
            "the cache serving what the store holds after a race",
            || async { cache.load(&r.id_hash, t).await.unwrap() == truth },
        )
        .await;
    }
    Kind::Redis.cleanup(&at).await;
}

/// Redis: after this process's commit was written through, a later write by another
/// connection is still pushed (the commit's own write must not end the server's tracking of
/// the key).
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_written_through_record_still_sees_other_writers() {
    let at = Kind::Redis.fresh(std::path::Path::new("."));
    let cache = Kind::Redis.cached(&at, false).await;
    let other = Kind::Redis.bare(&at).await;
    let r = record("erin");
    other.create(&r, r.last_seen).await.unwrap();
    until_hit(&*cache, &r.id_hash).await;
    let mut c = Changes::new();
    c.set("cart", Value::from(2));
    cache.apply(&r.id_hash, &c, NOW, NOW + 60).await.unwrap();
    let hits = cache.cache_stats().hits;
    assert_eq!(
        cache.load(&r.id_hash, NOW).await.unwrap().unwrap().data["cart"],
        Value::from(2)
    );
    assert_eq!(cache.cache_stats().hits, hits + 1, "written through");
    other.delete(&r.id_hash).await.unwrap();
    within(
        TAIL,
        "a logout by another writer after a written-through commit",
        || async { cache.load(&r.id_hash, NOW).await.unwrap().is_none() },
    )
    .await;
    Kind::Redis.cleanup(&at).await;
}

/// One user's overlapping requests, on a store whose cache writes commits through (Redis,
/// SQLite). Eight commits of one session at once, over and over: the cache keeps serving
/// the session while they run, writes them through in the order the store answers them,
/// and afterwards serves exactly what the store holds. (A cache that gave up writing
/// through whenever two commits of a session overlapped wrote none of these through; one
/// that wrote through without the version check serves a record missing some of the keys.)
async fn overlapping_commits_of_one_session_write_through(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let at = kind.fresh(dir.path());
    let cache = kind.cached(&at, false).await;
    let other = kind.bare(&at).await;
    let r = record("frank");
    other.create(&r, r.last_seen).await.unwrap();
    until_hit(&*cache, &r.id_hash).await;
    let before = cache.cache_stats();
    for round in 0..20i64 {
        let mut commits = tokio::task::JoinSet::new();
        for k in 0..8i64 {
            let (cache, id) = (Arc::clone(&cache), r.id_hash);
            commits.spawn(async move {
                let mut c = Changes::new();
                c.set(format!("k{k}"), Value::from(round));
                cache.apply(&id, &c, NOW, NOW + 60).await.unwrap();
                // A load while the others may still run.
                cache.load(&id, NOW).await.unwrap().unwrap();
            });
        }
        while let Some(done) = commits.join_next().await {
            done.unwrap();
        }
        let truth = other.load(&r.id_hash, NOW).await.unwrap();
        assert_eq!(
            cache.load(&r.id_hash, NOW).await.unwrap(),
            truth,
            "{kind:?}, round {round}: the cache does not serve what the store holds"
        );
        let data = &truth.unwrap().data;
        for k in 0..8 {
            assert_eq!(data[&format!("k{k}")], Value::from(round), "round {round}");
        }
    }
    let after = cache.cache_stats();
    let through = after.written_through - before.written_through;
    // The store applies them in some order and the callers take their answers in another
    // (tasks woken on two threads; SQLite's callers of one batch wake in any order): an
    // answer taken out of order evicts the record, a load fills it again, and answers
    // older than the record filled keep it. So how many are written through varies with
    // the scheduling (20 to 120 of 160 seen); a cache that stops writing through when
    // commits of a session overlap writes through none.
    let least = 10;
    assert!(
        through >= least,
        "{kind:?}: only {through} of 160 overlapping commits were written through: {before:?} -> {after:?}"
    );
    kind.cleanup(&at).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_overlapping_commits_of_one_session_write_through() {
    overlapping_commits_of_one_session_write_through(Kind::Redis).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_overlapping_commits_of_one_session_write_through() {
    overlapping_commits_of_one_session_write_through(Kind::Sqlite).await;
}

/// SQLite: this store's own commits change the file's `data_version` like anyone's, but
/// the store's writer tells them apart, so they do not drop the cache: another cached
/// session stays a hit after a commit, and the committed one is written through. A commit
/// by another connection still drops it. (With every change taken as someone else's, the
/// other session's load after the commit misses.)
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_own_commits_do_not_drop_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let at = Kind::Sqlite.fresh(dir.path());
    let cache = Kind::Sqlite.cached(&at, false).await;
    let other = Kind::Sqlite.bare(&at).await;
    let (a, b) = (record("gina"), record("hal"));
    for r in [&a, &b] {
        other.create(r, r.last_seen).await.unwrap();
    }
    for r in [&a, &b] {
        until_hit(&*cache, &r.id_hash).await;
    }
    for n in 0..20i64 {
        let mut c = Changes::new();
        c.set("cart", Value::from(n));
        cache.apply(&a.id_hash, &c, NOW, NOW + 60).await.unwrap();
        // Long enough for the watcher to see the file change (it asks every 0.5 ms).
        tokio::time::sleep(Duration::from_millis(3)).await;
        let before = cache.cache_stats();
        let got = cache.load(&a.id_hash, NOW).await.unwrap().unwrap();
        assert_eq!(got.data["cart"], Value::from(n));
        cache.load(&b.id_hash, NOW).await.unwrap().unwrap();
        let after = cache.cache_stats();
        assert_eq!(
            after.hits - before.hits,
            2,
            "commit {n}: this store's own commit dropped the cache: {before:?} -> {after:?}"
        );
    }
    let mut c = Changes::new();
    c.set("cart", Value::from(-1));
    other.apply(&a.id_hash, &c, NOW, NOW + 60).await.unwrap();
    within(TAIL, "a commit by another connection", || async {
        cache.load(&a.id_hash, NOW).await.unwrap().unwrap().data["cart"] == Value::from(-1)
    })
    .await;
}

// ---- the store contract still holds behind the cache ----

/// The conformance suite on a cached SQLite store; the corruption is written by another
/// connection, as another process would, and `PRAGMA data_version` must make the cache see
/// it.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_cache_passes_the_conformance_suite() {
    use cloakroom::conformance::{self, Corruptible};
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicU64::new(0);
    conformance::run(|| {
        let path = dir
            .path()
            .join(format!("store-{}.db", n.fetch_add(1, Ordering::Relaxed)));
        async move {
            let store = cloakroom_stores::SqliteStore::open(&path).await.unwrap();
            let cached = CachedStore::sqlite(store, 1000).await.unwrap();
            Corruptible::new(cached, move |id: IdHash| {
                common::corrupt_sqlite_record(path.clone(), id, "x'016e6f74206d73677061636b'")
            })
        }
    })
    .await;
}

/// The conformance suite on a cached Redis store, each case under a key prefix of its own;
/// the corruption is written by another connection (`HSET` of the record's data field), as
/// another process would.
///
/// This holds the store contract behind the cache; it is not a coherence test: a broken
/// twin whose `apply` does not evict its own entry still passes it on Redis and PostgreSQL
/// (the pushed invalidation of its own write arrives before the suite's next read), and on
/// SQLite (`data_version` sees the store's writer connection). Coherence is what
/// `*_cache_sees_other_writers` and the two-process tests above check.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cache_passes_the_conformance_suite() {
    use cloakroom::conformance::{self, Corruptible};
    let base = unique("cachetest_conf_");
    let n = AtomicU64::new(0);
    conformance::run(|| {
        let prefix = format!("{base}:{}:", n.fetch_add(1, Ordering::Relaxed));
        async move {
            let store = redis_store(&prefix).await;
            let target = store.clone();
            let conn = redis_raw().await;
            let cached = CachedStore::redis(store, &redis_url(), 1000).await.unwrap();
            Corruptible::new(cached, move |id: IdHash| {
                common::corrupt_redis_record(conn.clone(), target.record_key(&id))
            })
        }
    })
    .await;
    Kind::Redis.cleanup(&base).await;
}

/// The conformance suite on a cached PostgreSQL store, each case in a schema of its own
/// (with the cache's triggers); the corruption is an `UPDATE` on another connection.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cache_passes_the_conformance_suite() {
    use cloakroom::conformance::{self, Corruptible};
    let base = unique("cachetest_conf_");
    let schemas = std::sync::Mutex::new(Vec::new());
    conformance::run(|| {
        let schema = {
            let mut schemas = schemas.lock().unwrap();
            let schema = format!("{base}_{}", schemas.len());
            schemas.push(schema.clone());
            schema
        };
        async move {
            let store = postgres_store(&schema).await;
            let cached = CachedStore::postgres(store, &postgres_url(), 1000)
                .await
                .unwrap();
            let client = Arc::new(postgres_raw().await);
            Corruptible::new(cached, move |id: IdHash| {
                common::corrupt_postgres_record(client.clone(), schema.clone(), id)
            })
        }
    })
    .await;
    for schema in schemas.into_inner().unwrap() {
        Kind::Postgres.cleanup(&schema).await;
    }
}
