//! One axum app, two builds of it: on Cloakroom's `SessionLayer` and on tower-sessions 0.15's
//! `SessionManagerLayer`, each on its own store at that store's defaults (memory, SQLite,
//! Redis). Routes: `GET /read` reads a counter from the session, `POST /write` adds one to it.
//! `wrk` drives both the same way (one thread, loopback), in alternating rounds; the table
//! gives the ratio Cloakroom ÷ tower-sessions of 2xx answers per second, the p99 latency of
//! each side and the answers that were not 2xx (or got none) on each side.
//!
//! ```text
//! cargo bench -p cloakroom-tower --bench tower     # 3 alternating rounds of 3 s per side and cell
//! BENCH_QUICK=1 cargo bench -p cloakroom-tower --bench tower         # 1 round of 1 s: about 90 s
//! BENCH_SECS=5 BENCH_ROUNDS=5 cargo bench -p cloakroom-tower --bench tower
//! BENCH_BACKENDS=sqlite,sqlite-normal BENCH_CONNS=16,64 cargo bench -p cloakroom-tower --bench tower
//! ```
//!
//! Backends (`BENCH_BACKENDS`, default `memory,sqlite,sqlite-cached,redis,redis-cached`):
//! `memory`; `sqlite` (Cloakroom's
//! `SqliteStore::open`, against tower-sessions-sqlx-store on `SqlitePool::connect` of its own
//! file: sqlx's defaults, a rollback journal with `synchronous = FULL`); `sqlite-normal` (the
//! same, with tower-sessions' file in WAL mode with `synchronous = NORMAL`, Cloakroom's
//! default, for a comparison at equal durability); `redis` (Cloakroom's `RedisStore` against
//! tower-sessions-redis-store on a fred pool of 6 connections, as its README sets it up), on
//! `$CLOAKROOM_TEST_REDIS` (default redis://127.0.0.1:6379) under key prefixes of the
//! benchmark's own. `sqlite-cached`, `sqlite-normal-cached` and `redis-cached` are the same
//! comparisons with Cloakroom's store behind its session cache (`CachedStore::sqlite` /
//! `CachedStore::redis` of `DEFAULT_CAPACITY` records, what `cloakroom_stores::open_cached`
//! builds); their rows also print the cache's hits, store reads and invalidations per request.
//!
//! Workloads: GET for 256 users (each request carries the next of 256 session cookies), GET
//! for one user (every request the same cookie), POST for 256 users, POST for one user (all
//! connections write one session at once). Connections: `BENCH_CONNS`, default 1,16,64.
//! `wrk` is a Debian package (`apt-get install wrk`; scripts/setup.d/70-wrk.sh).
//!
//! `BENCH_ONLY=cloakroom` (or `tower-sessions`) drives one side only, one run per cell, for
//! a profiler attached to the benchmark process (`perf record -p`); with it,
//! `BENCH_WORKLOADS` picks workloads (`get-many,get-one,post-many,post-one`).
//!
//! `BENCH_COUNT=1` also counts the Cloakroom side's store calls and prints them per request
//! under each row (a wrapper store; leave it off for the ratios).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

// ---------------------------------------------------------------- the two builds of the app

/// The Cloakroom sides' store calls, when `BENCH_COUNT` is set.
static CALLS: std::sync::OnceLock<Arc<Calls>> = std::sync::OnceLock::new();

fn cloakroom_app(store: Arc<dyn cloakroom::Store>) -> Router {
    let store: Arc<dyn cloakroom::Store> = match CALLS.get() {
        Some(calls) => Arc::new(Counted {
            inner: store,
            calls: calls.clone(),
        }),
        None => store,
    };
    use cloakroom_tower::{Error, Session, SessionLayer};
    async fn read(s: Session) -> Result<String, Error> {
        Ok(s.get::<u64>("counter")?.unwrap_or(0).to_string())
    }
    async fn write(s: Session) -> Result<String, Error> {
        let n = s.get::<u64>("counter")?.unwrap_or(0) + 1;
        s.insert("counter", &n)?;
        Ok(n.to_string())
    }
    let layer = SessionLayer::builder()
        .key_ring(&cloakroom::KeyRing::generate().unwrap())
        .store(store)
        .insecure_plain_http_for_local_development()
        .build()
        .unwrap();
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .layer(layer)
}

fn tower_sessions_app<S: tower_sessions::SessionStore + Clone>(store: S) -> Router {
    use axum::http::StatusCode;
    use tower_sessions::{Session, SessionManagerLayer};
    async fn read(s: Session) -> Result<String, StatusCode> {
        let n: Option<u64> = s
            .get("counter")
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(n.unwrap_or(0).to_string())
    }
    async fn write(s: Session) -> Result<String, StatusCode> {
        let n: u64 = s
            .get("counter")
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
            .unwrap_or(0)
            + 1;
        s.insert("counter", n)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        Ok(n.to_string())
    }
    Router::new()
        .route("/read", get(read))
        .route("/write", post(write))
        .layer(SessionManagerLayer::new(store).with_secure(false))
}

// ---------------------------------------------------------------- counting store calls

/// The store calls a Cloakroom side made, by kind (`BENCH_COUNT=1`): how many round trips a
/// request costs.
#[derive(Debug, Default)]
struct Calls {
    counts: [std::sync::atomic::AtomicU64; 6],
}

const CALL_NAMES: [&str; 6] = ["load", "apply", "touch", "create", "delete", "other"];

impl Calls {
    fn add(&self, i: usize) {
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.counts[i].load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A store that counts the calls it passes on.
struct Counted {
    inner: Arc<dyn cloakroom::Store>,
    calls: Arc<Calls>,
}

#[async_trait::async_trait]
impl cloakroom::Store for Counted {
    async fn create(&self, r: &cloakroom::Record, now: u64) -> Result<(), cloakroom::store::Error> {
        self.calls.add(3);
        self.inner.create(r, now).await
    }
    async fn load(
        &self,
        id: &cloakroom::IdHash,
        now: u64,
    ) -> Result<Option<cloakroom::Record>, cloakroom::store::Error> {
        self.calls.add(0);
        self.inner.load(id, now).await
    }
    async fn update(
        &self,
        r: &cloakroom::Record,
        now: u64,
    ) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.update(r, now).await
    }
    async fn apply(
        &self,
        id: &cloakroom::IdHash,
        changes: &cloakroom::Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<cloakroom::Applied, cloakroom::store::Error> {
        self.calls.add(1);
        self.inner.apply(id, changes, now, idle_deadline).await
    }
    async fn touch(
        &self,
        id: &cloakroom::IdHash,
        now: u64,
        idle: u64,
    ) -> Result<(), cloakroom::store::Error> {
        self.calls.add(2);
        self.inner.touch(id, now, idle).await
    }
    async fn delete(&self, id: &cloakroom::IdHash) -> Result<bool, cloakroom::store::Error> {
        self.calls.add(4);
        self.inner.delete(id).await
    }
    async fn sessions_of(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<cloakroom::Record>, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.sessions_of(user, now).await
    }
    async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&cloakroom::IdHash>,
    ) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.revoke_user_sessions(user, except).await
    }
    async fn user_epoch(&self, user: &str) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.user_epoch(user).await
    }
    async fn bump_user_epoch(&self, user: &str) -> Result<u64, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.bump_user_epoch(user).await
    }
    async fn purge_expired(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<usize, cloakroom::store::Error> {
        self.calls.add(5);
        self.inner.purge_expired(now, limit).await
    }
}

// ---------------------------------------------------------------- tower-sessions' stores on 0.15

/// A store written for tower-sessions-core 0.14 (tower-sessions-sqlx-store 0.15 and
/// tower-sessions-redis-store 0.16, their current releases) used as a tower-sessions 0.15
/// store: each call is passed on, the record and id converted field by field.
#[derive(Debug, Clone)]
struct Core14<S>(S);

mod core14 {
    use tower_sessions::session::{Id, Record};
    use tower_sessions::session_store::{Error, Result};
    use tower_sessions_core as old;

    pub(crate) fn record(r: &Record) -> old::session::Record {
        old::session::Record {
            id: old::session::Id(r.id.0),
            data: r.data.clone(),
            expiry_date: r.expiry_date,
        }
    }

    pub(crate) fn record_back(r: old::session::Record) -> Record {
        Record {
            id: Id(r.id.0),
            data: r.data,
            expiry_date: r.expiry_date,
        }
    }

    pub(crate) fn id(id: &Id) -> old::session::Id {
        old::session::Id(id.0)
    }

    pub(crate) fn error(e: old::session_store::Error) -> Error {
        match e {
            old::session_store::Error::Encode(m) => Error::Encode(m),
            old::session_store::Error::Decode(m) => Error::Decode(m),
            old::session_store::Error::Backend(m) => Error::Backend(m),
        }
    }

    pub(crate) type R<T> = Result<T>;
}

#[async_trait::async_trait]
impl<S> tower_sessions::SessionStore for Core14<S>
where
    S: tower_sessions_core::SessionStore + Clone,
{
    async fn create(&self, record: &mut tower_sessions::session::Record) -> core14::R<()> {
        let mut old = core14::record(record);
        self.0.create(&mut old).await.map_err(core14::error)?;
        // The store may have picked another id (a collision).
        record.id = tower_sessions::session::Id(old.id.0);
        Ok(())
    }

    async fn save(&self, record: &tower_sessions::session::Record) -> core14::R<()> {
        self.0
            .save(&core14::record(record))
            .await
            .map_err(core14::error)
    }

    async fn load(
        &self,
        id: &tower_sessions::session::Id,
    ) -> core14::R<Option<tower_sessions::session::Record>> {
        Ok(self
            .0
            .load(&core14::id(id))
            .await
            .map_err(core14::error)?
            .map(core14::record_back))
    }

    async fn delete(&self, id: &tower_sessions::session::Id) -> core14::R<()> {
        self.0.delete(&core14::id(id)).await.map_err(core14::error)
    }
}

// ---------------------------------------------------------------- wrk

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    GetMany,
    GetOne,
    PostMany,
    PostOne,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::GetMany,
        Workload::GetOne,
        Workload::PostMany,
        Workload::PostOne,
    ];

    fn label(self) -> &'static str {
        match self {
            Workload::GetMany => "GET reading the session, 256 users",
            Workload::GetOne => "GET reading the session, one user",
            Workload::PostMany => "POST changing a counter, 256 users",
            Workload::PostOne => "POST changing a counter, one user, concurrent",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Workload::GetMany => "get-many",
            Workload::GetOne => "get-one",
            Workload::PostMany => "post-many",
            Workload::PostOne => "post-one",
        }
    }
}

/// Sessions per side for the many-users workloads.
const USERS: usize = 256;

/// One wrk run.
#[derive(Clone, Copy)]
struct Run {
    /// Answers, 2xx or not.
    requests: u64,
    /// 2xx answers per second.
    ok_rps: f64,
    p99: Duration,
    /// Answers that were not 2xx or 3xx, plus requests that got none (socket errors and
    /// timeouts).
    failed: u64,
}

/// A wrk script sending `method path` with the cookies in turn.
fn write_script(dir: &Path, name: &str, method: &str, path: &str, cookies: &[String]) -> PathBuf {
    let mut lua = String::from("local cookies = {\n");
    for c in cookies {
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
        writeln!(lua, "  \"{c}\",").unwrap();
    }
    let body = if method == "POST" { "\"\"" } else { "nil" };
    write!(
        lua,
        r#"}}
local requests = {{}}
local i = 0
init = function(args)
  for k, c in ipairs(cookies) do
    requests[k] = wrk.format("{method}", "{path}", {{ ["Cookie"] = c }}, {body})
  end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
"#
    )
    .unwrap();
    let file = dir.join(format!("{name}.lua"));
    std::fs::write(&file, lua).unwrap();
    file
}

/// A wrk duration ("1.00s", "250.12ms", "3.21us", "1.50m") in seconds.
fn wrk_time(s: &str) -> f64 {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("wrk time {s:?}"));
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("wrk time {s:?}"));
    n * match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => panic!("wrk time unit {unit:?}"),
    }
}

fn parse_wrk(out: &str) -> Run {
    let mut requests = None;
    let mut elapsed = None;
    let mut p99 = None;
    let mut failed = 0u64;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["99%", t] => p99 = Some(wrk_time(t)),
            [n, "requests", "in", t, ..] => {
                requests = Some(n.parse::<u64>().unwrap());
                elapsed = Some(wrk_time(t.trim_end_matches(',')));
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => failed += n.parse::<u64>().unwrap(),
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    failed += pair[1].trim_end_matches(',').parse::<u64>().unwrap();
                }
            }
            _ => {}
        }
    }
    let (Some(requests), Some(elapsed), Some(p99)) = (requests, elapsed, p99) else {
        panic!("unexpected wrk output:\n{out}");
    };
    Run {
        requests,
        ok_rps: requests.saturating_sub(failed) as f64 / elapsed,
        p99: Duration::from_secs_f64(p99),
        failed,
    }
}

async fn wrk(addr: SocketAddr, script: &Path, conns: usize, secs: u64) -> Run {
    let out = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s")])
        .args(["--timeout", "2s", "--latency", "-s"])
        .arg(script)
        .arg(format!("http://{addr}"))
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run wrk ({e}): install it with `apt-get install -y wrk` (scripts/setup.d/70-wrk.sh)")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text)
}

// ---------------------------------------------------------------- one side of a comparison

struct Side {
    addr: SocketAddr,
    /// One script per workload.
    scripts: Vec<(Workload, PathBuf)>,
    /// The session cache's counters, on a `-cached` backend's Cloakroom side.
    cache: Option<CacheProbe>,
}

/// Reads a [`cloakroom_stores::CachedStore`]'s counters (whatever its store).
type CacheProbe = Arc<dyn Fn() -> cloakroom_stores::CacheStats + Send + Sync>;

impl Side {
    /// Starts `router`, logs in `USERS` sessions with one POST each, and writes the scripts.
    async fn start(router: Router, dir: &Path, name: &str) -> Side {
        let addr = serve(router).await;
        let client = reqwest::Client::new();
        let mut cookies = Vec::with_capacity(USERS);
        for _ in 0..USERS {
            let reply = client
                .post(format!("http://{addr}/write"))
                .send()
                .await
                .unwrap();
            assert!(reply.status().is_success(), "{name}: {}", reply.status());
            let cookie = reply
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .unwrap_or_else(|| panic!("{name}: the first write sets a cookie"))
                .to_owned();
            reply.bytes().await.unwrap();
            cookies.push(cookie);
        }
        let scripts = Workload::ALL
            .iter()
            .map(|&w| {
                let (method, path) = match w {
                    Workload::GetMany | Workload::GetOne => ("GET", "/read"),
                    Workload::PostMany | Workload::PostOne => ("POST", "/write"),
                };
                let cookies = match w {
                    Workload::GetMany | Workload::PostMany => &cookies[..],
                    Workload::GetOne | Workload::PostOne => &cookies[..1],
                };
                let file =
                    write_script(dir, &format!("{name}-{}", w.short()), method, path, cookies);
                (w, file)
            })
            .collect();
        Side {
            addr,
            scripts,
            cache: None,
        }
    }

    fn with_cache(mut self, probe: Option<CacheProbe>) -> Self {
        self.cache = probe;
        self
    }

    fn script(&self, w: Workload) -> &Path {
        &self.scripts.iter().find(|(x, _)| *x == w).unwrap().1
    }
}

// ---------------------------------------------------------------- the backends

/// The Cloakroom side's store behind a `CachedStore` (as `cloakroom_stores::open_cached`
/// makes it), with a probe of its counters.
fn cached_store<S: cloakroom::Store>(
    c: cloakroom_stores::CachedStore<S>,
) -> (Arc<dyn cloakroom::Store>, Option<CacheProbe>) {
    let c = Arc::new(c);
    let probe = c.clone();
    (c, Some(Arc::new(move || probe.cache_stats())))
}

async fn backend(name: &str, dir: &Path, redis_url: &str) -> (String, Side, Side) {
    // `<store>-cached`: the Cloakroom side reads through the session cache.
    let (base, cached) = match name.strip_suffix("-cached") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let suffix = if cached { ", Cloakroom cached" } else { "" };
    let cloakroom_dir = dir.join(format!("{name}-cloakroom"));
    let theirs_dir = dir.join(format!("{name}-tower-sessions"));
    let capacity = cloakroom_stores::DEFAULT_CAPACITY;
    match base {
        "memory" if !cached => (
            "memory".to_owned(),
            Side::start(
                cloakroom_app(Arc::new(cloakroom::MemoryStore::new())),
                dir,
                "memory-cloakroom",
            )
            .await,
            Side::start(
                tower_sessions_app(tower_sessions::MemoryStore::default()),
                dir,
                "memory-tower-sessions",
            )
            .await,
        ),
        "sqlite" | "sqlite-normal" => {
            std::fs::create_dir_all(&cloakroom_dir).unwrap();
            std::fs::create_dir_all(&theirs_dir).unwrap();
            let store = cloakroom_stores::SqliteStore::open(cloakroom_dir.join("sessions.db"))
                .await
                .unwrap();
            let (ours, probe): (Arc<dyn cloakroom::Store>, _) = if cached {
                cached_store(
                    cloakroom_stores::CachedStore::sqlite(store, capacity)
                        .await
                        .unwrap(),
                )
            } else {
                (Arc::new(store), None)
            };
            let file = theirs_dir.join("sessions.db");
            let pool = if base == "sqlite" {
                // What a new user writes: sqlx's defaults.
                sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", file.display()))
                    .await
                    .unwrap()
            } else {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
                let options = SqliteConnectOptions::new()
                    .filename(&file)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5));
                sqlx::SqlitePool::connect_with(options).await.unwrap()
            };
            let theirs = tower_sessions_sqlx_store::SqliteStore::new(pool);
            theirs.migrate().await.unwrap();
            let label = if base == "sqlite" {
                "SQLite"
            } else {
                "SQLite, theirs WAL+NORMAL"
            };
            (
                format!("{label}{suffix}"),
                Side::start(cloakroom_app(ours), dir, &format!("{name}-cloakroom"))
                    .await
                    .with_cache(probe),
                Side::start(
                    tower_sessions_app(Core14(theirs)),
                    dir,
                    &format!("{name}-tower-sessions"),
                )
                .await,
            )
        }
        "redis" => {
            let store = cloakroom_stores::RedisStore::builder(redis_url)
                .with_prefix(format!("cloakroom-bench:{}:{name}:", std::process::id()))
                .connect()
                .await
                .unwrap_or_else(|e| {
                    panic!("no Redis at {redis_url} ({e}): start it with scripts/test --setup-only, or set CLOAKROOM_TEST_REDIS")
                });
            let (ours, probe): (Arc<dyn cloakroom::Store>, _) = if cached {
                cached_store(
                    cloakroom_stores::CachedStore::redis(store, redis_url, capacity)
                        .await
                        .unwrap(),
                )
            } else {
                (Arc::new(store), None)
            };
            let theirs = {
                use fred::prelude::{ClientLike, Config, Pool};
                let config = Config::from_url(redis_url).unwrap();
                let pool = Pool::new(config, None, None, None, 6).unwrap();
                pool.init().await.expect("Redis");
                tower_sessions_redis_store::RedisStore::new(pool)
            };
            (
                format!("Redis{suffix}"),
                Side::start(cloakroom_app(ours), dir, &format!("{name}-cloakroom"))
                    .await
                    .with_cache(probe),
                Side::start(
                    tower_sessions_app(Core14(theirs)),
                    dir,
                    &format!("{name}-tower-sessions"),
                )
                .await,
            )
        }
        _ => panic!(
            "unknown backend {name:?} in BENCH_BACKENDS (memory, sqlite, sqlite-normal, redis; \
             the last three also with -cached)"
        ),
    }
}

// ---------------------------------------------------------------- the run

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not valid")),
        Err(_) => default,
    }
}

/// CPU seconds this process (the servers, not wrk) has used, from /proc/self/stat.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which ends with ')'): utime and stime are the 12th
    // and 13th, in clock ticks (100 a second on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A workload's cells, one per connection count.
type WorkloadCells = (Workload, Vec<(usize, Cell)>);

/// One cell's result: medians over the rounds, failures summed.
struct Cell {
    ours: Run,
    theirs: Run,
}

impl Cell {
    fn ratio(&self) -> f64 {
        self.ours.ok_rps / self.theirs.ok_rps
    }
}

fn summarise(runs: &[Run]) -> Run {
    Run {
        requests: runs.iter().map(|r| r.requests).sum(),
        ok_rps: median(runs.iter().map(|r| r.ok_rps).collect()),
        p99: Duration::from_secs_f64(median(runs.iter().map(|r| r.p99.as_secs_f64()).collect())),
        failed: runs.iter().map(|r| r.failed).sum(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0");
    let secs: u64 = env_or("BENCH_SECS", if quick { 1 } else { 3 });
    let rounds: usize = env_or("BENCH_ROUNDS", if quick { 1 } else { 3 });
    let conns: Vec<usize> = env_or::<String>("BENCH_CONNS", "1,16,64".into())
        .split(',')
        .map(|c| c.trim().parse().expect("BENCH_CONNS: numbers"))
        .collect();
    let backends: Vec<String> = env_or::<String>(
        "BENCH_BACKENDS",
        "memory,sqlite,sqlite-cached,redis,redis-cached".into(),
    )
    .split(',')
    .map(|b| b.trim().to_owned())
    .collect();
    assert!(
        secs > 0 && rounds > 0,
        "BENCH_SECS and BENCH_ROUNDS must be positive"
    );
    if std::env::var_os("BENCH_COUNT").is_some_and(|v| v != "0") {
        CALLS.set(Arc::default()).unwrap();
    }
    let redis_url =
        std::env::var("CLOAKROOM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let dir = tempfile::tempdir().unwrap();
    println!(
        "wrk -t1, {rounds} alternating round(s) of {secs} s per side and cell; medians; failed = not 2xx or no answer, summed over the rounds"
    );

    let workloads = env_or::<String>(
        "BENCH_WORKLOADS",
        "get-many,get-one,post-many,post-one".into(),
    );
    let workloads: Vec<&str> = workloads.split(',').map(str::trim).collect();
    // For a profiler: one side only, one run per cell, no comparison.
    let only = std::env::var("BENCH_ONLY").ok();
    if let Some(side) = &only {
        assert!(
            side == "cloakroom" || side == "tower-sessions",
            "BENCH_ONLY is cloakroom or tower-sessions"
        );
    }
    let mut summary: Vec<(String, Vec<WorkloadCells>)> = Vec::new();
    for name in &backends {
        let (label, ours, theirs) = backend(name, dir.path(), &redis_url).await;
        // Warm both sides up (connections, caches, the SQLite files) before the first round.
        for side in [&ours, &theirs] {
            for w in [Workload::GetMany, Workload::PostMany] {
                wrk(side.addr, side.script(w), 16, 1).await;
            }
        }
        if let Some(side) = &only {
            let side = if side == "cloakroom" { &ours } else { &theirs };
            for w in Workload::ALL {
                if !workloads.contains(&w.short()) {
                    continue;
                }
                for &c in &conns {
                    let cpu = process_cpu();
                    let run = wrk(side.addr, side.script(w), c, secs).await;
                    let cpu = process_cpu() - cpu;
                    println!(
                        "{label}, {}, {c} conns, {only:?} only: {:.0} 2xx/s, p99 {}, {} failed, server CPU {:.1} us per request",
                        w.label(),
                        run.ok_rps,
                        ms(run.p99),
                        run.failed,
                        cpu * 1e6 / run.requests as f64
                    );
                }
            }
            continue;
        }
        println!();
        println!("### {label}");
        println!();
        println!("| workload | conns | Cloakroom 2xx/s | tower-sessions 2xx/s | ratio | Cloakroom p99 | tower-sessions p99 | Cloakroom failed | tower-sessions failed |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut per_workload = Vec::new();
        for w in Workload::ALL {
            let mut cells = Vec::new();
            for &c in &conns {
                // Alternating rounds (A B, B A, A B, ...), the median of each: the machine
                // is shared, and a burst of someone else's work must not land on one side
                // only.
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let calls_before = CALLS.get().map(|c| c.snapshot());
                let cache_before = ours.cache.as_ref().map(|probe| probe());
                for round in 0..rounds {
                    if round % 2 == 0 {
                        a.push(wrk(ours.addr, ours.script(w), c, secs).await);
                        b.push(wrk(theirs.addr, theirs.script(w), c, secs).await);
                    } else {
                        b.push(wrk(theirs.addr, theirs.script(w), c, secs).await);
                        a.push(wrk(ours.addr, ours.script(w), c, secs).await);
                    }
                }
                let cell = Cell {
                    ours: summarise(&a),
                    theirs: summarise(&b),
                };
                println!(
                    "| {} | {c} | {:.0} | {:.0} | {:.2}x | {} | {} | {} | {} |",
                    w.label(),
                    cell.ours.ok_rps,
                    cell.theirs.ok_rps,
                    cell.ratio(),
                    ms(cell.ours.p99),
                    ms(cell.theirs.p99),
                    cell.ours.failed,
                    cell.theirs.failed,
                );
                if let (Some(before), Some(calls)) = (calls_before, CALLS.get()) {
                    let after = calls.snapshot();
                    let per_request: Vec<String> = CALL_NAMES
                        .iter()
                        .zip(before.iter().zip(after))
                        .filter(|(_, (b, a))| a > b)
                        .map(|(name, (b, a))| {
                            format!("{name} {:.2}", (a - b) as f64 / cell.ours.requests as f64)
                        })
                        .collect();
                    println!(
                        "|   Cloakroom store calls per request: {} | | | | | | | | |",
                        per_request.join(", ")
                    );
                }
                if let (Some(before), Some(probe)) = (cache_before, &ours.cache) {
                    let after = probe();
                    let per = |a: u64, b: u64| (a - b) as f64 / cell.ours.requests as f64;
                    println!(
                        "|   Cloakroom session cache per request: {:.2} hits, {:.2} store reads ({:.2} misses, {:.2} bypassed), {:.2} invalidations | | | | | | | | |",
                        per(after.hits, before.hits),
                        per(after.misses + after.bypassed, before.misses + before.bypassed),
                        per(after.misses, before.misses),
                        per(after.bypassed, before.bypassed),
                        per(after.invalidations, before.invalidations),
                    );
                }
                cells.push((c, cell));
            }
            per_workload.push((w, cells));
        }
        summary.push((label, per_workload));
    }

    // The issue's table: one row per workload, one column per backend, the ratios at each
    // connection count.
    println!();
    println!(
        "### Ratio Cloakroom ÷ tower-sessions (2xx/s) at {} connections",
        conns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!();
    let mut header = String::from("| workload |");
    let mut rule = String::from("|---|");
    for (label, _) in &summary {
        write!(header, " {label} |").unwrap();
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for (i, w) in Workload::ALL.iter().enumerate() {
        let mut row = format!("| {} |", w.label());
        for (_, per_workload) in &summary {
            let cells = &per_workload[i].1;
            let ratios: Vec<String> = cells
                .iter()
                .map(|(_, cell)| format!("{:.2}", cell.ratio()))
                .collect();
            write!(row, " {} |", ratios.join(" / ")).unwrap();
        }
        println!("{row}");
    }
}
