//! The stores for production (issue 15) on real servers: Redis and PostgreSQL over TLS
//! (servers started here with a certificate made here), the plaintext guard, Redis Cluster
//! (the conformance suite, and a primary killed under load), and the memcached flood.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[cfg(feature = "redis")]
mod redis_tls {
    use std::process::Command;
    use std::time::Duration;

    use cloakroom::conformance::Corruptible;
    use cloakroom::store::{Error, ErrorKind};
    use cloakroom::{IdHash, Store};
    use cloakroom_stores::RedisStore;

    use crate::common::{self, Child, T0};

    /// redis-server on a free port with TLS only (`--port 0 --tls-port`).
    fn tls_server(dir: &std::path::Path, certs: &common::Certificates) -> (Child, u16) {
        let port = common::free_port();
        let child = common::start_server(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", "0"])
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&certs.cert)
                .arg("--tls-key-file")
                .arg(&certs.key)
                .arg("--tls-ca-cert-file")
                .arg(&certs.ca)
                .args([
                    "--tls-auth-clients",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir),
            port,
            "redis-server --tls-port",
        );
        (child, port)
    }

    async fn store(url: &str, prefix: &str) -> Result<RedisStore, Error> {
        RedisStore::builder(url)
            .with_prefix(prefix)
            .with_connect_timeout(Duration::from_millis(500))
            .with_command_timeout(Duration::from_millis(1000))
            .connect()
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let certs = common::certificates(dir.path());
        let (_server, port) = tls_server(dir.path(), &certs);
        let url = format!("rediss://127.0.0.1:{port}?ca={}", certs.ca.display());
        // The test's own raw connection, for corrupting records: TLS too.
        let raw = redis::Client::build_with_tls(
            format!("rediss://127.0.0.1:{port}"),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(&certs.ca).unwrap()),
            },
        )
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
        let name = |n| format!("tls:{n}:");
        common::conformance_each(name, |prefix| {
            let (url, conn) = (url.clone(), raw.clone());
            async move {
                let store = store(&url, &prefix).await.unwrap();
                let target = store.clone();
                Corruptible::new(store, move |id: IdHash| {
                    common::corrupt_redis_record(conn.clone(), target.record_key(&id))
                })
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_certificate_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let certs = common::certificates(dir.path());
        let (_server, port) = tls_server(dir.path(), &certs);
        // The CA file as a builder option works like the URL option.
        let s = RedisStore::builder(format!("rediss://127.0.0.1:{port}"))
            .with_prefix("tls-builder:")
            .with_ca_file(&certs.ca)
            .connect()
            .await
            .unwrap();
        s.create(&common::record("b"), T0).await.unwrap();
        // Another CA did not sign the server's certificate: refused.
        let url = format!("rediss://127.0.0.1:{port}?ca={}", certs.other_ca.display());
        let err = store(&url, "tls-other:").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // Nor do the system's CAs know the test CA.
        let err = store(&format!("rediss://127.0.0.1:{port}"), "tls-system:")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // The certificate is for 127.0.0.1 and localhost: both names verify.
        let url = format!("rediss://localhost:{port}?ca={}", certs.ca.display());
        store(&url, "tls-localhost:").await.unwrap();
        // Plaintext to the TLS port gets nowhere.
        let err = store(&format!("redis://127.0.0.1:{port}"), "tls-plain:")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // A CA file with a plaintext URL is a mistake, said so.
        let url = format!("redis://127.0.0.1:{port}?ca={}", certs.ca.display());
        let err = store(&url, "tls-mixed:").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let url = format!(
            "rediss://127.0.0.1:{port}?ca={}",
            dir.path().join("nope").display()
        );
        let err = store(&url, "tls-missing:").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let _ = T0;
    }

    #[tokio::test]
    async fn plaintext_to_a_remote_host_is_refused_unless_allowed() {
        // 192.0.2.1 is TEST-NET-1: never this machine, never answers.
        common::plaintext_to_remote_hosts(
            |url| async move { store(&url, "remote:").await },
            &[
                "redis://192.0.2.1:6379",
                "redis://cache.example.invalid:6379/1",
                "redis+cluster://127.0.0.1:7000,192.0.2.1:7001",
            ],
            // Allowed by the URL option; TLS to a remote host needs no option.
            &[
                "redis://192.0.2.1:6379?allow_plaintext_to_remote_host",
                "rediss://192.0.2.1:6380",
            ],
        )
        .await;
        // Allowed by the builder method: it is tried, and the host is away.
        let result = RedisStore::builder("redis://192.0.2.1:6379")
            .allow_plaintext_to_remote_host()
            .with_connect_timeout(Duration::from_millis(300))
            .with_command_timeout(Duration::from_millis(300))
            .connect()
            .await;
        common::assert_kind(result, ErrorKind::Unavailable);
    }
}

#[cfg(feature = "postgres")]
mod postgres_tls {
    use std::process::Command;
    use std::time::Duration;

    use cloakroom::conformance::Corruptible;
    use cloakroom::store::{Error, ErrorKind};
    use cloakroom::{IdHash, Store};
    use cloakroom_stores::PostgresStore;

    use crate::common::{self, PgCluster, T0};

    /// A throwaway PostgreSQL cluster with `ssl=on` and a pg_hba.conf that takes TCP
    /// connections over TLS only (`hostssl`; `hostnossl` rejected), so a store that reaches
    /// it used TLS. The test's own connection goes through the Unix socket.
    struct TlsCluster {
        pg: PgCluster,
        certs: common::Certificates,
    }

    impl TlsCluster {
        fn new() -> Self {
            let pg = PgCluster::init();
            let certs = common::certificates(pg.dir.path());
            // PostgreSQL wants its key owned by itself and unreadable to others.
            common::chown_postgres(&certs.key);
            common::chown_postgres(&certs.cert);
            let _ = Command::new("chmod").arg("600").arg(&certs.key).status();
            std::fs::write(
                pg.data().join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            pg.start(&format!(
                "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                certs.cert.display(),
                certs.key.display(),
            ));
            Self { pg, certs }
        }

        fn url(&self, query: &str) -> String {
            self.pg.url(query)
        }

        /// The test's own connection, through the Unix socket.
        async fn raw(&self) -> tokio_postgres::Client {
            let conf = format!(
                "host={} port={} user=postgres dbname=postgres",
                self.pg.dir.path().display(),
                self.pg.port
            );
            let (client, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
        }
    }

    async fn store(url: &str, schema: &str) -> Result<PostgresStore, Error> {
        PostgresStore::builder(url)
            .with_schema(schema)
            .with_pool_size(4)
            .with_connect_timeout(Duration::from_millis(1000))
            .with_command_timeout(Duration::from_millis(2000))
            .connect()
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_over_tls() {
        let cluster = TlsCluster::new();
        let url = cluster.url(&format!(
            "sslmode=require&ca={}",
            cluster.certs.ca.display()
        ));
        let client = std::sync::Arc::new(cluster.raw().await);
        let name = |n| format!("tls_{n}");
        common::conformance_each(name, |schema| {
            let (url, client) = (url.clone(), client.clone());
            async move {
                let store = store(&url, &schema).await.unwrap();
                Corruptible::new(store, move |id: IdHash| {
                    common::corrupt_postgres_record(client.clone(), schema.clone(), id)
                })
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_certificate_is_checked_and_plaintext_is_refused_by_the_server() {
        let cluster = TlsCluster::new();
        // The CA file as a builder option, TLS then required without sslmode in the URL.
        let s = PostgresStore::builder(cluster.url(""))
            .with_schema("tls_builder")
            .with_ca_file(&cluster.certs.ca)
            .connect()
            .await
            .unwrap();
        s.create(&common::record("b"), T0).await.unwrap();
        // Its sessions are readable through the socket: the TLS store wrote them.
        let rows = cluster
            .raw()
            .await
            .query("SELECT count(*) FROM tls_builder.sessions", &[])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 1);
        // Loopback without a CA file or sslmode=require: plaintext, which this server
        // rejects (so the stores above did use TLS).
        let err = store(&cluster.url(""), "tls_plain").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // Another CA, or the system's: the certificate does not verify.
        let other = format!("sslmode=require&ca={}", cluster.certs.other_ca.display());
        let err = store(&cluster.url(&other), "tls_other").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        let err = store(&cluster.url("sslmode=require"), "tls_system")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // A CA file with sslmode=disable contradicts itself.
        let both = format!("sslmode=disable&ca={}", cluster.certs.ca.display());
        let err = store(&cluster.url(&both), "tls_both").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let _ = T0;
    }

    #[tokio::test]
    async fn plaintext_to_a_remote_host_is_refused_unless_allowed() {
        // 192.0.2.1 is TEST-NET-1: never this machine, never answers.
        common::plaintext_to_remote_hosts(
            |url| async move { store(&url, "remote").await },
            &[
                "postgres://u@192.0.2.1/db?sslmode=disable",
                "postgres://u@db.example.invalid:5432/db?sslmode=disable",
            ],
            // Allowed by the URL option; without sslmode a remote host gets TLS (required).
            &[
                "postgres://u@192.0.2.1/db?sslmode=disable&allow_plaintext_to_remote_host",
                "postgres://u@192.0.2.1/db",
            ],
        )
        .await;
        // Allowed by the builder method: it is tried, and the host is away.
        let result = PostgresStore::builder("postgres://u@192.0.2.1/db?sslmode=disable")
            .allow_plaintext_to_remote_host()
            .with_connect_timeout(Duration::from_millis(300))
            .connect()
            .await;
        common::assert_kind(result, ErrorKind::Unavailable);
    }
}

/// Redis Cluster: the one of `scripts/setup.d/43-redis-cluster.sh` (3 primaries, 3 replicas
/// on 127.0.0.1:7000-7005), named by `CLOAKROOM_TEST_REDIS_CLUSTER`.
#[cfg(feature = "redis")]
mod redis_cluster {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use cloakroom::conformance::{self, Corruptible};
    use cloakroom::store::ErrorKind;
    use cloakroom::{IdHash, Store};
    use cloakroom_stores::RedisStore;

    use crate::common::{self, T0};

    const START: &str =
        "scripts/test --setup-only (or: . scripts/lib.sh; . scripts/setup.d/43-redis-cluster.sh)";

    fn url() -> String {
        std::env::var("CLOAKROOM_TEST_REDIS_CLUSTER").unwrap_or_else(|_| {
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002".into()
        })
    }

    fn seed_ports() -> Vec<u16> {
        let url = url();
        let hosts = url.split_once("://").map_or("", |(_, r)| r);
        hosts
            .split(',')
            .filter_map(|h| {
                h.rsplit_once(':')
                    .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
            })
            .collect()
    }

    async fn store(prefix: &str) -> RedisStore {
        RedisStore::builder(url())
            .with_prefix(prefix)
            .with_connect_timeout(Duration::from_millis(500))
            // Every write waits for a replica (WAIT). Under a full test run on two cores with
            // every node fsyncing each write, a replica's confirmation has taken over 200 ms
            // (the default wait for a 2 s timeout): give it 1 s. A connection blocked in
            // `WAIT` carries nothing else, so the writes of one record (64 at once in the
            // conformance suite's race) each wait their turn: give them 5 s together.
            .with_command_timeout(Duration::from_millis(5000))
            .with_replica_wait(Duration::from_millis(1000))
            .connect()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the Redis Cluster is not reachable at {} ({e}); start it: {START}",
                    url()
                )
            })
    }

    async fn node(port: u16) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()
    }

    /// One line of `CLUSTER NODES`.
    #[derive(Debug, Clone)]
    struct Node {
        id: String,
        port: u16,
        primary: bool,
        /// Of a replica: its primary's id.
        primary_id: String,
        failed: bool,
        has_slots: bool,
    }

    async fn nodes() -> Vec<Node> {
        for port in seed_ports() {
            let Some(mut conn) = node(port).await else {
                continue;
            };
            let Ok(text) = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn)
                .await
            else {
                continue;
            };
            return text
                .lines()
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let port = f
                        .get(1)?
                        .split(['@', ','])
                        .next()?
                        .rsplit_once(':')?
                        .1
                        .parse()
                        .ok()?;
                    Some(Node {
                        id: f[0].to_owned(),
                        port,
                        primary: f[2].contains("master"),
                        primary_id: f[3].to_owned(),
                        failed: f[2].contains("fail") || f[7] != "connected",
                        has_slots: f.len() > 8,
                    })
                })
                .collect();
        }
        panic!("no node of the Redis Cluster answers CLUSTER NODES; start it: {START}");
    }

    /// Deletes every key under `prefix` on every primary (one key at a time: no cross-slot).
    async fn cleanup(prefix: &str) {
        for n in nodes().await.into_iter().filter(|n| n.primary && !n.failed) {
            let Some(mut conn) = node(n.port).await else {
                continue;
            };
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            for k in keys {
                let _: Result<redis::Value, _> =
                    redis::cmd("DEL").arg(k).query_async(&mut conn).await;
            }
        }
    }

    /// A replica wait that is not shorter than the command timeout is refused before any
    /// connection is made (it would turn every slow replica into a timeout that says
    /// nothing about replication).
    #[tokio::test]
    async fn a_replica_wait_not_under_the_command_timeout_is_refused() {
        for wait in [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(5),
        ] {
            let err = RedisStore::builder(url())
                .with_command_timeout(Duration::from_secs(1))
                .with_replica_wait(wait)
                .connect()
                .await
                .err()
                .unwrap_or_else(|| panic!("a replica wait of {wait:?} was accepted"));
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("replica wait"), "{err}");
        }
    }

    /// One test, so that the failover never runs beside the conformance suite (which would
    /// then see the killed primary's slots away).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_then_a_primary_killed_under_load() {
        conformance_on_the_cluster().await;
        a_read_does_not_wait_behind_writes_waiting_for_replicas().await;
        a_primary_killed_under_load_fails_over().await;
    }

    /// A write is followed by `WAIT`, which holds its primary's connection until replicas
    /// confirm. Here every write waits the whole replica wait (2 s: it asks for 2 replicas,
    /// each primary has 1), as every write does on a primary whose replica is gone (just
    /// after a failover). Loads of a record, sent while touches of that record (anonymous:
    /// the touch script on its key is the first write) keep its primary's write connection
    /// waiting, must still answer at once from the primary: under half the wait each.
    /// (When reads shared the writes' connection, they queued behind the waits and timed
    /// out, and the failover test below failed in about one run of two under load.)
    async fn a_read_does_not_wait_behind_writes_waiting_for_replicas() {
        wait_healthy(Duration::from_secs(30)).await;
        let prefix = common::unique("cloakroom-wait:");
        let mut r = common::record("reader");
        r.user_id = None;
        store(&prefix).await.create(&r, T0).await.unwrap();
        let waiting = RedisStore::builder(url())
            .with_prefix(&prefix)
            .with_connect_timeout(Duration::from_millis(500))
            .with_command_timeout(Duration::from_millis(5000))
            .with_replica_acks(2)
            .with_replica_wait(Duration::from_millis(2000))
            .connect()
            .await
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for _ in 0..4 {
            let (store, stop, id, deadline) =
                (waiting.clone(), stop.clone(), r.id_hash, r.idle_deadline);
            writers.push(tokio::spawn(async move {
                let mut refused = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let err = store
                        .touch(&id, T0, deadline)
                        .await
                        .expect_err("a write confirmed by 2 replicas where there is 1");
                    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
                    refused += 1;
                }
                refused
            }));
        }
        // Let the writers' first waits begin.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..5 {
            let started = Instant::now();
            let loaded = waiting.load(&r.id_hash, T0).await;
            let took = started.elapsed();
            assert!(
                matches!(loaded, Ok(Some(_))),
                "the record does not load while writes wait for replicas: {loaded:?}"
            );
            assert!(
                took < Duration::from_millis(1000),
                "a load took {took:?}: it waited behind writes waiting for replicas"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            assert!(w.await.unwrap() > 0, "no write was waiting");
        }
        cleanup(&prefix).await;
    }

    async fn conformance_on_the_cluster() {
        // A cluster just created (scripts/test's setup) may still be syncing its replicas.
        wait_healthy(Duration::from_secs(30)).await;
        let base = common::unique("cloakroom-test:");
        let seeds: Vec<String> = seed_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        let raw = redis::cluster::ClusterClient::new(seeds)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap_or_else(|e| {
                panic!("the Redis Cluster is not reachable ({e}); start it: {START}")
            });
        let mut n = 0;
        conformance::run(|| {
            n += 1;
            let prefix = format!("{base}:{n}:");
            let conn = raw.clone();
            async move {
                let store = store(&prefix).await;
                let target = store.clone();
                Corruptible::new(store, move |id: IdHash| {
                    common::corrupt_redis_record(conn.clone(), target.record_key(&id))
                })
            }
        })
        .await;
        cleanup(&base).await;
    }

    /// The start command `43-redis-cluster.sh` wrote for the node on `port`.
    fn start_node(port: u16) {
        let script = format!("/tmp/cloakroom-redis-cluster/{port}/start");
        let ok = std::process::Command::new(&script)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {script} ({e}); start the cluster: {START}"))
            .success();
        assert!(ok, "{script} failed");
        common::wait_port(port, "Redis Cluster node");
    }

    /// Whether the primary on `port` has a replica whose replication link is up (`INFO
    /// replication`: `slave0:...,state=online,...`); a replica still in its first sync is not.
    async fn replica_online(port: u16) -> bool {
        let Some(mut conn) = node(port).await else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        info.lines()
            .any(|l| l.starts_with("slave") && l.contains("state=online"))
    }

    /// Waits until every node is connected and up, each primary with slots has a replica,
    /// and each of those replicas is in sync.
    async fn wait_healthy(within: Duration) -> Vec<Node> {
        let deadline = Instant::now() + within;
        loop {
            let all = nodes().await;
            let primaries: Vec<&Node> = all.iter().filter(|n| n.primary && n.has_slots).collect();
            let mut healthy = all.iter().all(|n| !n.failed)
                && primaries.len() == 3
                && primaries
                    .iter()
                    .all(|p| all.iter().any(|r| !r.primary && r.primary_id == p.id));
            for p in &primaries {
                healthy = healthy && replica_online(p.port).await;
            }
            if healthy {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster is not healthy (3 primaries, each with a replica in sync): \
                 {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the killed node again if the test ends early (a failed assertion), so that the
    /// cluster is whole for the next run.
    struct Restore(u16);

    impl Drop for Restore {
        fn drop(&mut self) {
            if std::net::TcpStream::connect(("127.0.0.1", self.0)).is_err() {
                start_node(self.0);
            }
        }
    }

    /// A primary is killed (SIGKILL) while writers create sessions. Its replica is promoted
    /// by the cluster itself (node timeout 2 s, no `CLUSTER FAILOVER`): then every create
    /// acknowledged so far loads from the promoted replica (each was confirmed by a replica,
    /// `WAIT`, before it was acknowledged). The promoted primary has no replica of its own,
    /// so creates in its slots keep failing (Unavailable: not confirmed) until the killed
    /// node is started again and rejoins as its replica; then the same store succeeds again.
    /// Every error is Unavailable, and every acknowledged create is there at the end.
    async fn a_primary_killed_under_load_fails_over() {
        let all = wait_healthy(Duration::from_secs(30)).await;
        let victim = all
            .iter()
            .find(|n| n.primary && n.has_slots)
            .expect("a primary")
            .clone();
        let restore = Restore(victim.port);
        let prefix = common::unique("cloakroom-failover:");
        let store = store(&prefix).await;
        let acked: Arc<Mutex<Vec<cloakroom::Record>>> = Arc::default();
        let errors: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..8 {
            let (store, acked, errors, stop) =
                (store.clone(), acked.clone(), errors.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let r = common::record(&format!("u{w}_{i}"));
                    match store.create(&r, r.last_seen).await {
                        Ok(()) => acked.lock().unwrap().push(r),
                        Err(e) => {
                            let kind = format!("{:?}", e.kind());
                            if e.kind() != ErrorKind::Unavailable {
                                eprintln!("unexpected error: {e}");
                            }
                            *errors.lock().unwrap().entry(kind).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = acked.lock().unwrap().len();
        assert!(before > 0, "no create succeeded before the kill");
        // SIGKILL the primary (its pid from INFO).
        let mut conn = node(victim.port).await.expect("the victim answers");
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .unwrap();
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .map(|p| p.trim().to_owned())
            .expect("process_id in INFO");
        let killed_at = Instant::now();
        let ok = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -KILL {pid}");
        // Wait for a replica to take over the victim's slots, then for writes to succeed
        // again for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all = nodes().await;
            let promoted = all
                .iter()
                .filter(|n| n.primary && n.has_slots && !n.failed && n.port != victim.port)
                .count()
                == 3;
            if promoted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no replica was promoted within 30 s: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let promoted_after = killed_at.elapsed();
        let errors_at_promotion: u64 = errors.lock().unwrap().values().sum();
        let acked_at_promotion = acked.lock().unwrap().clone();
        // Nothing acknowledged was lost: the promoted replica has every record (the store
        // may need a moment to learn the new primary: retried for 10 s).
        for r in &acked_at_promotion {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match store.load(&r.id_hash, T0).await {
                    Ok(Some(_)) => break,
                    Ok(None) => panic!("an acknowledged create was lost in the failover"),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                        assert!(
                            Instant::now() < deadline,
                            "no load after the failover: {e:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        // Restore the cluster: the killed node rejoins as the promoted one's replica.
        start_node(victim.port);
        drop(restore);
        let healthy = wait_healthy(Duration::from_secs(60)).await;
        let back = healthy.iter().find(|n| n.port == victim.port).unwrap();
        assert!(
            !back.primary,
            "the restarted node should be a replica: {back:?}"
        );
        // The same store goes on: 2 s of successes with no new error.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let errs: u64 = errors.lock().unwrap().values().sum();
            let oks = acked.lock().unwrap().len();
            tokio::time::sleep(Duration::from_millis(2000)).await;
            let now_errs: u64 = errors.lock().unwrap().values().sum();
            if now_errs == errs && acked.lock().unwrap().len() > oks {
                break;
            }
            let seen = errors.lock().unwrap().clone();
            assert!(
                Instant::now() < deadline,
                "the store did not recover after the failover: {seen:?}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let errors = errors.lock().unwrap().clone();
        let acked = acked.lock().unwrap().clone();
        eprintln!(
            "failover: promoted after {promoted_after:?}; {} creates acknowledged ({before} \
             before the kill, {} at promotion); errors {errors:?} \
             ({errors_at_promotion} by promotion)",
            acked.len(),
            acked_at_promotion.len()
        );
        // Only Unavailable, and some (the victim's slots were away for the node timeout).
        assert!(
            errors.keys().all(|k| k == "Unavailable"),
            "errors other than Unavailable: {errors:?}"
        );
        assert!(
            errors.get("Unavailable").copied().unwrap_or(0) > 0,
            "no request failed while a primary was down: was it really killed?"
        );
        // No acknowledged write lost: every record that create acknowledged is there, and
        // in its user's index.
        let mut lost = 0;
        for r in &acked {
            let user = r.user_id.as_deref().unwrap();
            match store.load(&r.id_hash, T0).await {
                Ok(Some(_)) => {}
                other => {
                    lost += 1;
                    eprintln!("lost {user}: {other:?}");
                }
            }
            let listed = store.sessions_of(user, T0).await.unwrap();
            assert_eq!(listed.len(), 1, "{user} is not in its index");
        }
        assert_eq!(lost, 0, "acknowledged creates lost in the failover");
        cleanup(&prefix).await;
    }
}

/// memcached: a flood of anonymous creates, then a login.
#[cfg(feature = "memcached")]
mod memcached_flood {
    use std::process::Command;
    use std::time::Duration;

    use cloakroom::{Policy, Record, SessionId, Store};
    use cloakroom_stores::MemcachedStore;

    use crate::common::{self, Child, T0};

    /// A throwaway memcached with a 64 KiB item limit (`-I 64k`), so that an index that
    /// grows with every create passes the limit within the flood (a 1 MiB limit would take
    /// about 400 000 creates with the old sharded purge index).
    fn memcached(port: u16) -> Child {
        common::start_server(
            Command::new("memcached")
                .args([
                    "-u",
                    "root",
                    "-l",
                    "127.0.0.1",
                    "-U",
                    "0",
                    "-m",
                    "512",
                    "-I",
                    "64k",
                    "-o",
                    "slab_chunk_max=32768",
                    "-p",
                ])
                .arg(port.to_string()),
            port,
            "memcached",
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flood_of_100000_anonymous_creates_does_not_stop_a_login() {
        let port = common::free_port();
        let _server = memcached(port);
        let addr = format!("127.0.0.1:{port}");
        let store = MemcachedStore::builder(&addr)
            .with_prefix("flood:")
            .with_command_timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..3125 {
                    let r = Record::new(
                        SessionId::generate().unwrap().hash(),
                        T0,
                        &Policy::default(),
                    );
                    store.create(&r, r.last_seen).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // A login: a session with a user, listed, its record loads.
        let r = common::record("alice");
        store.create(&r, r.last_seen).await.unwrap();
        assert!(store.load(&r.id_hash, T0).await.unwrap().is_some());
        assert_eq!(store.sessions_of("alice", T0).await.unwrap().len(), 1);
        // Purge still works after the flood: at the deadline, the flood's sessions go.
        let purged = store.purge_expired(T0 + 24 * 3600, 1000).await.unwrap();
        assert_eq!(purged, 1000);
    }

    /// A record over memcached's item limit is refused before it is sent, as too large.
    #[tokio::test]
    async fn a_record_over_the_item_limit_is_refused() {
        let port = common::free_port();
        let _server = memcached(port);
        let store = MemcachedStore::builder(format!("127.0.0.1:{port}"))
            .connect()
            .await
            .unwrap();
        let mut r = common::record("big");
        r.data
            .insert("blob".into(), cloakroom::Value::from("x".repeat(2 << 20)));
        let err = store.create(&r, r.last_seen).await.unwrap_err();
        assert_eq!(err.kind(), cloakroom::store::ErrorKind::TooLarge, "{err}");
    }
}
