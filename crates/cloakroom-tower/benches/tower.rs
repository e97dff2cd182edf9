//! One axum app, two builds of it: with Cloakroom's `SessionLayer` and with tower-sessions'
//! `SessionManagerLayer`, on the same SQLite file and the same Redis. Routes: `GET /read`
//! reads a session value, `POST /write` writes one key. One load generator for both: N
//! keep-alive connections on 127.0.0.1, each with its own session, each sending requests
//! back to back for a fixed time; requests per second and p99 latency are reported.
//!
//! ```text
//! cargo bench -p cloakroom-tower --bench tower       # 5 alternating rounds of 1 s per side
//! BENCH_SECS=3 BENCH_ROUNDS=7 cargo bench -p cloakroom-tower --bench tower
//! ```
//!
//! Redis: `$CLOAKROOM_TEST_REDIS` (default redis://127.0.0.1:6379), keys under prefixes of
//! the benchmark's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

// ---------------------------------------------------------------- the two builds of the app

fn cloakroom_app(store: Arc<dyn cloakroom::Store>) -> Router {
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

// ---------------------------------------------------------------- the load generator

struct Result_ {
    rps: f64,
    p99: Duration,
    errors: usize,
}

async fn load(addr: SocketAddr, write: bool, connections: usize, secs: f64) -> Result_ {
    let mut tasks = Vec::new();
    let start_at = Instant::now() + Duration::from_millis(300);
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let base = format!("http://{addr}");
            // A session of this connection's own.
            let first = client.post(format!("{base}/write")).send().await.unwrap();
            let cookie = first
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .expect("the first write sets a cookie")
                .to_owned();
            first.bytes().await.unwrap();
            tokio::time::sleep_until(start_at.into()).await;
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let mut latencies = Vec::new();
            let mut errors = 0;
            while Instant::now() < end {
                let t = Instant::now();
                let req = if write {
                    client.post(format!("{base}/write"))
                } else {
                    client.get(format!("{base}/read"))
                };
                match req.header("cookie", &cookie).send().await {
                    Ok(r) if r.status().is_success() => {
                        r.bytes().await.unwrap();
                    }
                    _ => errors += 1,
                }
                latencies.push(t.elapsed());
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    Result_ {
        rps: all.len() as f64 / secs,
        p99,
        errors,
    }
}

/// The round with the median requests per second (its p99 with it).
fn median(mut rounds: Vec<Result_>) -> Result_ {
    rounds.sort_by(|x, y| x.rps.total_cmp(&y.rps));
    rounds.swap_remove(rounds.len() / 2)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let redis_url =
        std::env::var("CLOAKROOM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.db");

    // SQLite: both stores in the same file (each its own table), WAL, synchronous=NORMAL.
    let cloakroom_sqlite: Arc<dyn cloakroom::Store> =
        Arc::new(cloakroom_stores::SqliteStore::open(&file).await.unwrap());
    let ts_sqlite = {
        use sqlx::sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous,
        };
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePool::connect_with(options).await.unwrap();
        let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
        store.migrate().await.unwrap();
        store
    };
    // Redis: the same server, different prefixes.
    let cloakroom_redis: Arc<dyn cloakroom::Store> = Arc::new(
        cloakroom_stores::RedisStore::builder(redis_url.as_str())
            .with_prefix(format!("cloakroom-bench:{}:", std::process::id()))
            .connect()
            .await
            .expect("Redis (start it with scripts/test --setup-only)"),
    );
    let ts_redis = {
        use fred::prelude::{ClientLike, Config, Pool};
        let config = Config::from_url(&redis_url).unwrap();
        let pool = Pool::new(config, None, None, None, 1).unwrap();
        pool.init().await.expect("Redis");
        tower_sessions_redis_store::RedisStore::new(pool)
    };

    let builds = [
        (
            "SQLite",
            serve(cloakroom_app(cloakroom_sqlite)).await,
            serve(tower_sessions_app(ts_sqlite)).await,
        ),
        (
            "Redis",
            serve(cloakroom_app(cloakroom_redis)).await,
            serve(tower_sessions_app(ts_redis)).await,
        ),
    ];
    println!("| backend | route | conns | Cloakroom req/s | tower-sessions req/s | ratio | Cloakroom p99 | tower-sessions p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (backend, ours, theirs) in builds {
        for (route, write) in [("GET /read", false), ("POST /write", true)] {
            for conns in [1, 16, 64] {
                // Alternating rounds (A B, B A, A B, ...), the median of each: the machine is
                // shared, and a burst of someone else's work must not land on one side only.
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    let (x, y) = if round % 2 == 0 {
                        let x = load(ours, write, conns, secs).await;
                        (x, load(theirs, write, conns, secs).await)
                    } else {
                        let y = load(theirs, write, conns, secs).await;
                        (load(ours, write, conns, secs).await, y)
                    };
                    assert_eq!(x.errors, 0, "Cloakroom errors on {backend} {route}");
                    assert_eq!(y.errors, 0, "tower-sessions errors on {backend} {route}");
                    a.push(x);
                    b.push(y);
                }
                let (a, b) = (median(a), median(b));
                println!(
                    "| {backend} | {route} | {conns} | {:.0} | {:.0} | {:.2}x | {:.2} ms | {:.2} ms |",
                    a.rps,
                    b.rps,
                    a.rps / b.rps,
                    a.p99.as_secs_f64() * 1e3,
                    b.p99.as_secs_f64() * 1e3
                );
            }
        }
    }
}
