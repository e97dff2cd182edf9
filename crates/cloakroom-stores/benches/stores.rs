//! Store benchmarks: the groups `load`, `update` and `apply_contended`, one function per
//! backend in each.
//!
//! Every backend is one `Backend` in [`backends`]: a name and a setup function that returns
//! a [`Target`] with a stored session ready to be loaded and written. Both groups run every
//! backend, so a backend is added in one place. Peers are compared on the same settings
//! (`tower_sessions_sqlite` uses the same WAL + `synchronous = NORMAL` file as `sqlite`).
//!
//! To add one (issue 6: `redis`, `postgres`, `memcached`, `tower_sessions_redis`,
//! `tower_sessions_postgres`): write `fn <name>(rt: &Runtime, dir: &Path) -> Box<dyn Target>`
//! below and push it in [`backends`] behind its feature.
//!
//! `update` is one compare-and-swap write of the whole record for Cloakroom stores and one
//! `save` (an upsert of the whole record) for tower-sessions stores: the write a request that
//! changed its session does.
//!
//! `apply_contended` is what one user's burst of requests costs: 64 commits of one session
//! at once, each changing its own key, through [`Store::apply`] (one iteration is all 64
//! done). Cloakroom stores only: tower-sessions saves whole records and has no merge.
//!
//! `*_cached` is the store of the same name behind [`cloakroom_stores::CachedStore`] (issue
//! 12): its `load` is answered from memory after the backend's invalidation check (SQLite's
//! `PRAGMA data_version`; nothing per load for Redis and PostgreSQL, whose changes are
//! pushed); its writes go to the store and evict, except that on Redis a commit of a cached
//! session is written through (see the cache's module documentation).
//!
//! Run: `cargo bench -p cloakroom-stores --features file,sqlite --bench stores`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cloakroom::{Changes, MemoryStore, Policy, Record, SessionId, Store, Value};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;

/// The time the benchmark's Cloakroom records are read and written at.
const NOW: u64 = 1_700_000_000;

/// A backend with one stored session.
trait Target {
    /// Loads the session (and checks it is there).
    fn load(&self, rt: &Runtime);
    /// Writes the session back once.
    fn update(&self, rt: &Runtime);
    /// Commits [`WRITERS`] overlapping requests of the session, each changing its own key,
    /// and waits for all of them; `false` for a store that has no such commit.
    fn apply_contended(&self, _rt: &Runtime) -> bool {
        false
    }
}

/// How many requests of one session commit at once in `apply_contended`.
const WRITERS: u64 = 64;

struct Backend {
    name: &'static str,
    setup: fn(&Runtime, &Path) -> Box<dyn Target>,
}

fn backends() -> Vec<Backend> {
    let mut all = vec![Backend {
        name: "memory",
        setup: memory,
    }];
    // --- single machine (issue 4) ---
    #[cfg(feature = "file")]
    all.push(Backend {
        name: "file",
        setup: file,
    });
    #[cfg(feature = "sqlite")]
    all.push(Backend {
        name: "sqlite",
        setup: sqlite,
    });
    // What `Synchronous::Full` (survives power loss) costs over the default.
    #[cfg(feature = "sqlite")]
    all.push(Backend {
        name: "sqlite_full",
        setup: sqlite_full,
    });
    // The same store behind the session cache (CachedStore, issue 12): a load is a hit.
    #[cfg(feature = "sqlite")]
    all.push(Backend {
        name: "sqlite_cached",
        setup: sqlite_cached,
    });
    all.push(Backend {
        name: "tower_sessions_sqlite",
        setup: tower_sessions_sqlite,
    });
    // --- many machines (issue 6) ---
    // Servers from scripts/setup.d (CLOAKROOM_TEST_REDIS, _POSTGRES, _MEMCACHED), with their
    // peers from tower-sessions on the same servers.
    #[cfg(feature = "redis")]
    all.push(Backend {
        name: "redis",
        setup: redis,
    });
    // The same store on the local Redis Cluster (issue 15: 3 primaries with a replica each,
    // scripts/setup.d/43-redis-cluster.sh; CLOAKROOM_TEST_REDIS_CLUSTER), every write
    // confirmed by a replica (the default `with_replica_acks(1)`).
    #[cfg(feature = "redis")]
    all.push(Backend {
        name: "redis_cluster",
        setup: redis_cluster,
    });
    #[cfg(feature = "redis")]
    all.push(Backend {
        name: "redis_cached",
        setup: redis_cached,
    });
    #[cfg(feature = "redis")]
    all.push(Backend {
        name: "tower_sessions_redis",
        setup: tower_sessions_redis,
    });
    #[cfg(feature = "postgres")]
    all.push(Backend {
        name: "postgres",
        setup: postgres,
    });
    #[cfg(feature = "postgres")]
    all.push(Backend {
        name: "postgres_cached",
        setup: postgres_cached,
    });
    #[cfg(feature = "postgres")]
    all.push(Backend {
        name: "tower_sessions_postgres",
        setup: tower_sessions_postgres,
    });
    #[cfg(feature = "memcached")]
    all.push(Backend {
        name: "memcached",
        setup: memcached,
    });
    all
}

// ---- Cloakroom stores ----

/// A typical session: a logged-in user, a CSRF secret, a little app state.
fn session_record() -> Record {
    let mut r = Record::new(
        SessionId::generate().expect("OS random").hash(),
        NOW,
        &Policy::default(),
    );
    r.user_id = Some("user-950".into());
    r.data.insert("_csrf".into(), Value::Binary(vec![7; 32]));
    r.data.insert(
        "cart".into(),
        Value::Array(vec![Value::from(1), Value::from(2), Value::from(3)]),
    );
    r.data.insert("theme".into(), Value::from("dark"));
    r
}

struct Cloakroom<S> {
    store: Arc<S>,
    /// The record as last written (its version is the one the next update expects).
    record: Mutex<Record>,
}

impl<S: Store> Cloakroom<S> {
    fn boxed(rt: &Runtime, store: S) -> Box<dyn Target> {
        let record = session_record();
        rt.block_on(store.create(&record, record.last_seen))
            .expect("create");
        Box::new(Self {
            store: Arc::new(store),
            record: Mutex::new(record),
        })
    }
}

impl<S: Store> Target for Cloakroom<S> {
    fn load(&self, rt: &Runtime) {
        let id = self.record.lock().unwrap().id_hash;
        let got = rt.block_on(self.store.load(&id, NOW)).expect("load");
        assert!(black_box(got).is_some());
    }

    fn update(&self, rt: &Runtime) {
        let mut record = self.record.lock().unwrap();
        let version = rt
            .block_on(self.store.update(&record, NOW))
            .expect("update");
        record.version = version;
    }

    fn apply_contended(&self, rt: &Runtime) -> bool {
        let id = self.record.lock().unwrap().id_hash;
        rt.block_on(async {
            let mut writers = tokio::task::JoinSet::new();
            for i in 0..WRITERS {
                let store = Arc::clone(&self.store);
                writers.spawn(async move {
                    let mut changes = Changes::new();
                    changes.set(format!("w{i}"), Value::from(i));
                    store.apply(&id, &changes, NOW, NOW + 1800).await
                });
            }
            while let Some(done) = writers.join_next().await {
                black_box(done.expect("task").expect("apply"));
            }
        });
        true
    }
}

fn memory(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    Cloakroom::boxed(rt, MemoryStore::new())
}

#[cfg(feature = "file")]
fn file(rt: &Runtime, dir: &Path) -> Box<dyn Target> {
    let store = rt
        .block_on(cloakroom_stores::FileStore::open(dir.join("file-store")))
        .expect("open");
    Cloakroom::boxed(rt, store)
}

#[cfg(feature = "sqlite")]
fn sqlite(rt: &Runtime, dir: &Path) -> Box<dyn Target> {
    // The defaults: WAL, synchronous = NORMAL, busy timeout 5 s.
    let store = rt
        .block_on(cloakroom_stores::SqliteStore::open(
            dir.join("cloakroom.db"),
        ))
        .expect("open");
    Cloakroom::boxed(rt, store)
}

/// The session cache's capacity in the `*_cached` benchmarks.
#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
const CACHE: usize = 10_000;

#[cfg(feature = "sqlite")]
fn sqlite_cached(rt: &Runtime, dir: &Path) -> Box<dyn Target> {
    let store = rt
        .block_on(cloakroom_stores::SqliteStore::open(
            dir.join("cloakroom-cached.db"),
        ))
        .expect("open");
    let cached = rt
        .block_on(cloakroom_stores::CachedStore::sqlite(store, CACHE))
        .expect("cache");
    Cloakroom::boxed(rt, cached)
}

// Many machines (issue 6): each run uses its own key prefix / schema on the shared servers.

#[cfg(any(feature = "redis", feature = "postgres", feature = "memcached"))]
fn server(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

#[cfg(feature = "redis")]
fn run_name() -> String {
    format!("bench_{}", std::process::id())
}

/// A Redis store at `url` under this run's prefix followed by `suffix`; `what` names the
/// server if it cannot be reached.
#[cfg(feature = "redis")]
fn redis_store(rt: &Runtime, url: &str, suffix: &str, what: &str) -> cloakroom_stores::RedisStore {
    rt.block_on(
        cloakroom_stores::RedisStore::builder(url)
            .with_prefix(format!("{}{suffix}:", run_name()))
            .connect(),
    )
    .unwrap_or_else(|e| panic!("{what} (start it with scripts/test --setup-only): {e:?}"))
}

#[cfg(feature = "redis")]
fn redis(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    let url = server("CLOAKROOM_TEST_REDIS", "redis://127.0.0.1:6379");
    Cloakroom::boxed(rt, redis_store(rt, &url, "", "Redis"))
}

#[cfg(feature = "redis")]
fn redis_cluster(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    let url = server(
        "CLOAKROOM_TEST_REDIS_CLUSTER",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
    );
    Cloakroom::boxed(rt, redis_store(rt, &url, "_cluster", "Redis Cluster"))
}

#[cfg(feature = "postgres")]
fn postgres(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    let url = server(
        "CLOAKROOM_TEST_POSTGRES",
        "postgres://postgres:postgres@127.0.0.1:5432/test",
    );
    let schema = "bench_cloakroom";
    rt.block_on(drop_schema(&url, schema));
    let store = rt
        .block_on(
            cloakroom_stores::PostgresStore::builder(url)
                .with_schema(schema)
                .connect(),
        )
        .expect("PostgreSQL (start it with scripts/test --setup-only)");
    Cloakroom::boxed(rt, store)
}

#[cfg(feature = "redis")]
fn redis_cached(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    let url = server("CLOAKROOM_TEST_REDIS", "redis://127.0.0.1:6379");
    let store = redis_store(rt, &url, "_cached", "Redis");
    let cached = rt
        .block_on(cloakroom_stores::CachedStore::redis(store, &url, CACHE))
        .expect("cache");
    Cloakroom::boxed(rt, cached)
}

#[cfg(feature = "postgres")]
fn postgres_cached(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    let url = server(
        "CLOAKROOM_TEST_POSTGRES",
        "postgres://postgres:postgres@127.0.0.1:5432/test",
    );
    let schema = "bench_cloakroom_cached";
    rt.block_on(drop_schema(&url, schema));
    let store = rt
        .block_on(
            cloakroom_stores::PostgresStore::builder(url.clone())
                .with_schema(schema)
                .connect(),
        )
        .expect("PostgreSQL (start it with scripts/test --setup-only)");
    let cached = rt
        .block_on(cloakroom_stores::CachedStore::postgres(store, &url, CACHE))
        .expect("cache");
    Cloakroom::boxed(rt, cached)
}

/// Starts a benchmark's PostgreSQL schema afresh (one per store, reused by every run).
#[cfg(feature = "postgres")]
async fn drop_schema(url: &str, schema: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL (start it with scripts/test --setup-only)");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop schema");
}

#[cfg(feature = "memcached")]
fn memcached(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    let addr = server("CLOAKROOM_TEST_MEMCACHED", "127.0.0.1:11211");
    let store = rt
        .block_on(
            cloakroom_stores::MemcachedStore::builder(addr)
                .with_prefix(format!("bench_{}:", std::process::id()))
                .connect(),
        )
        .expect("memcached (start it with scripts/test --setup-only)");
    Cloakroom::boxed(rt, store)
}

#[cfg(feature = "sqlite")]
fn sqlite_full(rt: &Runtime, dir: &Path) -> Box<dyn Target> {
    use cloakroom_stores::{SqliteOptions, SqliteStore, Synchronous};
    let options =
        SqliteOptions::new(dir.join("cloakroom-full.db")).with_synchronous(Synchronous::Full);
    let store = rt.block_on(SqliteStore::open_with(options)).expect("open");
    Cloakroom::boxed(rt, store)
}

// ---- tower-sessions stores ----

struct TowerSessions<S> {
    store: S,
    record: tower_sessions_core::session::Record,
}

impl<S: tower_sessions_core::SessionStore> Target for TowerSessions<S> {
    fn load(&self, rt: &Runtime) {
        let got = rt.block_on(self.store.load(&self.record.id)).expect("load");
        assert!(black_box(got).is_some());
    }

    fn update(&self, rt: &Runtime) {
        rt.block_on(self.store.save(&self.record)).expect("save");
    }
}

/// The same session as [`session_record`], as tower-sessions keeps it (JSON values).
fn tower_record() -> tower_sessions_core::session::Record {
    let data: HashMap<String, serde_json::Value> = [
        ("user_id", serde_json::json!("user-950")),
        ("_csrf", serde_json::json!(vec![7u8; 32])),
        ("cart", serde_json::json!([1, 2, 3])),
        ("theme", serde_json::json!("dark")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    tower_sessions_core::session::Record {
        id: tower_sessions_core::session::Id(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        data,
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::days(1),
    }
}

fn tower_sessions_sqlite(rt: &Runtime, dir: &Path) -> Box<dyn Target> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
    use tower_sessions_core::SessionStore;

    // The same file settings as `sqlite`.
    let options = SqliteConnectOptions::new()
        .filename(dir.join("tower-sessions.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(std::time::Duration::from_secs(5));
    let store = rt.block_on(async {
        let pool = SqlitePool::connect_with(options).await.expect("connect");
        let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
        store.migrate().await.expect("migrate");
        store
    });
    let record = tower_record();
    rt.block_on(store.save(&record)).expect("save");
    Box::new(TowerSessions { store, record })
}

#[cfg(feature = "redis")]
fn tower_sessions_redis(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    use fred::prelude::{ClientLike, Config, Pool};
    use tower_sessions_core::SessionStore;

    let url = server("CLOAKROOM_TEST_REDIS", "redis://127.0.0.1:6379");
    let store = rt.block_on(async {
        let config = Config::from_url(&url).expect("Redis URL");
        // One connection, as `redis` multiplexes one.
        let pool = Pool::new(config, None, None, None, 1).expect("fred pool");
        pool.init()
            .await
            .expect("Redis (start it with scripts/test --setup-only)");
        tower_sessions_redis_store::RedisStore::new(pool)
    });
    // Its `save` is `SET … XX`: the key must exist first. Its `create` (`SET … NX`) fails
    // to parse the nil Redis answers for a key that exists (the same fixed id is set up once
    // per group), so the key is deleted first.
    let mut record = tower_record();
    rt.block_on(store.delete(&record.id)).expect("delete");
    rt.block_on(store.create(&mut record)).expect("create");
    Box::new(TowerSessions { store, record })
}

#[cfg(feature = "postgres")]
fn tower_sessions_postgres(rt: &Runtime, _dir: &Path) -> Box<dyn Target> {
    use tower_sessions_core::SessionStore;

    let url = server(
        "CLOAKROOM_TEST_POSTGRES",
        "postgres://postgres:postgres@127.0.0.1:5432/test",
    );
    let store = rt.block_on(async {
        drop_schema(&url, "bench_tower_sessions").await;
        let pool = sqlx::PgPool::connect(&url)
            .await
            .expect("PostgreSQL (start it with scripts/test --setup-only)");
        let store = tower_sessions_sqlx_store::PostgresStore::new(pool)
            .with_schema_name("bench_tower_sessions")
            .expect("schema name");
        store.migrate().await.expect("migrate");
        store
    });
    let record = tower_record();
    rt.block_on(store.save(&record)).expect("save");
    Box::new(TowerSessions { store, record })
}

// ---- the groups ----

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The group `name`: `op` on every backend, one function each. `op` answers whether the
/// backend has the operation; it is tried once before the measurement, and a backend
/// without it is left out of the group.
fn group(c: &mut Criterion, name: &str, op: impl Fn(&dyn Target, &Runtime) -> bool) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group(name);
    for backend in backends() {
        let target = (backend.setup)(&rt, dir.path());
        if !op(&*target, &rt) {
            continue;
        }
        group.bench_function(backend.name, |b| b.iter(|| op(&*target, &rt)));
    }
    group.finish();
}

fn load(c: &mut Criterion) {
    group(c, "load", |target, rt| {
        target.load(rt);
        true
    });
}

fn update(c: &mut Criterion) {
    group(c, "update", |target, rt| {
        target.update(rt);
        true
    });
}

fn apply_contended(c: &mut Criterion) {
    group(c, "apply_contended", |target, rt| {
        target.apply_contended(rt)
    });
}

criterion_group!(benches, load, update, apply_contended);
criterion_main!(benches);
