//! The backends: each starts one Cloakroom side and one tower-sessions side on its store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::apps::{cloakroom_app, tower_sessions_app};
use crate::core14::Core14;
use crate::server::{first_write_cookie, serve};
use crate::wrk::{write_script, Workload, USERS};

pub(crate) struct Side {
    pub(crate) addr: SocketAddr,
    /// One script per workload.
    pub(crate) scripts: Vec<(Workload, PathBuf)>,
    /// The session cache's counters, on a `-cached` backend's Cloakroom side.
    pub(crate) cache: Option<CacheProbe>,
}

/// Reads a [`cloakroom_stores::CachedStore`]'s counters (whatever its store).
pub(crate) type CacheProbe = Arc<dyn Fn() -> cloakroom_stores::CacheStats + Send + Sync>;

impl Side {
    /// Starts `router`, logs in `USERS` sessions with one POST each, and writes the scripts.
    pub(crate) async fn start(router: Router, dir: &Path, name: &str) -> Side {
        let addr = serve(router).await;
        let client = reqwest::Client::new();
        let mut cookies = Vec::with_capacity(USERS);
        let url = format!("http://{addr}/write");
        for _ in 0..USERS {
            cookies.push(first_write_cookie(&client, &url, name).await);
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

    pub(crate) fn with_cache(mut self, probe: Option<CacheProbe>) -> Self {
        self.cache = probe;
        self
    }

    pub(crate) fn script(&self, w: Workload) -> &Path {
        &self.scripts.iter().find(|(x, _)| *x == w).unwrap().1
    }
}

// ---------------------------------------------------------------- the backends

/// The Cloakroom side's store behind a `CachedStore` (as `cloakroom_stores::open_cached`
/// makes it), with a probe of its counters.
pub(crate) fn cached_store<S: cloakroom::Store>(
    c: cloakroom_stores::CachedStore<S>,
) -> (Arc<dyn cloakroom::Store>, Option<CacheProbe>) {
    let c = Arc::new(c);
    let probe = c.clone();
    (c, Some(Arc::new(move || probe.cache_stats())))
}

/// The two sides of backend `name`: Cloakroom on `ours` (with its cache probe, if any),
/// tower-sessions on `theirs` (a tower-sessions-core 0.14 store), under `label`.
async fn sides<T>(
    label: String,
    name: &str,
    dir: &Path,
    (ours, probe): (Arc<dyn cloakroom::Store>, Option<CacheProbe>),
    theirs: T,
) -> (String, Side, Side)
where
    T: tower_sessions_core::SessionStore + Clone,
{
    (
        label,
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

pub(crate) async fn backend(name: &str, dir: &Path, redis_url: &str) -> (String, Side, Side) {
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
            sides(format!("{label}{suffix}"), name, dir, (ours, probe), theirs).await
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
            sides(format!("Redis{suffix}"), name, dir, (ours, probe), theirs).await
        }
        _ => panic!(
            "unknown backend {name:?} in BENCH_BACKENDS (memory, sqlite, sqlite-normal, redis; \
             the last three also with -cached)"
        ),
    }
}
