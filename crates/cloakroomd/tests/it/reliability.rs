//! Clients that vanish, a store that stops, shutdown with slow requests in flight, and
//! several daemons on one store.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloakroom::store::Error;
use cloakroom::MemoryStore;
use cloakroom_proto::{Data, Device, Reply, Request, Secret, Status, Verb};

use crate::support::{free_port, Client, Hook, Hooked, InProcess};

/// A [`Hooked`] memory store's delay: every call first sleeps this many milliseconds.
struct Delay(Arc<AtomicU64>);

#[async_trait]
impl Hook for Delay {
    async fn before(&self, _op: &'static str) -> Result<(), Error> {
        let ms = self.0.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(())
    }
}

fn slow_daemon(delay_ms: u64) -> (InProcess, Arc<AtomicU64>) {
    let delay = Arc::new(AtomicU64::new(delay_ms));
    let store = Hooked {
        inner: MemoryStore::new(),
        hook: Delay(delay.clone()),
    };
    let d = InProcess::start_with(|c| {
        c.store_instance = Some(Arc::new(store));
        c.cache_size = Some(0);
    });
    (d, delay)
}

fn issue_request() -> Request {
    Request::Issue {
        user_id: None,
        data: Data::new(),
        device: Device::new(),
    }
}

#[test]
fn a_slow_store_call_delays_no_other_client_and_many_are_in_flight() {
    let (d, _) = slow_daemon(300);
    let mut slow = d.client();
    for _ in 0..50 {
        slow.send(&issue_request());
    }
    // PING does not touch the store: answered at once though 50 slow calls are in flight.
    let mut other = d.client();
    let t = Instant::now();
    assert!(matches!(other.call(&Request::Ping), Reply::Pong { .. }));
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // All 50 run at once: answered in about one delay, not fifty.
    let t = Instant::now();
    for _ in 0..50 {
        assert_eq!(slow.recv(Verb::Issue).unwrap().1.status(), Status::Ok);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn shutdown_answers_slow_requests_in_flight() {
    let (mut d, _) = slow_daemon(500);
    let mut c = d.client();
    for _ in 0..20 {
        c.send(&issue_request());
    }
    let until = Instant::now() + Duration::from_secs(5);
    while d.daemon().metrics().requests_in_flight() < 20 {
        assert!(Instant::now() < until, "requests never in flight");
        std::thread::sleep(Duration::from_millis(5));
    }
    d.shutdown();
    for _ in 0..20 {
        let (_, r) = c
            .recv(Verb::Issue)
            .expect("answered before the daemon stopped");
        assert_eq!(r.status(), Status::Ok, "{r:?}");
    }
}

#[test]
fn a_client_vanishing_with_requests_in_flight_leaks_nothing() {
    let (d, _) = slow_daemon(100);
    let m = d.daemon().metrics().clone();
    for _ in 0..10 {
        let mut c = d.client();
        for _ in 0..100 {
            c.send(&issue_request());
        }
        // All 100 are being handled (the store takes 100 ms each) when the client goes.
        let until = Instant::now() + Duration::from_secs(5);
        while m.requests_in_flight() < 100 {
            assert!(Instant::now() < until, "requests never in flight");
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(c);
        let until = Instant::now() + Duration::from_secs(10);
        while m.requests_in_flight() != 0 || m.connected_clients() != 0 {
            assert!(
                Instant::now() < until,
                "{} requests still in flight, {} clients connected",
                m.requests_in_flight(),
                m.connected_clients()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut c = d.client();
    assert!(matches!(c.call(&Request::Ping), Reply::Pong { .. }));
    assert_eq!(
        m.requests(Some(Verb::Issue), Status::Ok),
        1000,
        "every request was handled"
    );
}

/// A redis-server of our own on a private port.
struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16, dir: tempfile::TempDir) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (install it: scripts/setup.d/40-redis.sh)");
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }

    fn kill(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        let dir = tempfile::tempdir().unwrap();
        (port, std::mem::replace(&mut self.dir, dir))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_stopped_store_gives_unavailable_and_service_resumes() {
    let port = free_port();
    let redis = Redis::start(port, tempfile::tempdir().unwrap());
    let d = InProcess::start_with(|c| c.store = Some(format!("redis://127.0.0.1:{port}/")));
    let mut c = Client::connect_with(&d.ctx, &d.endpoint(), Duration::from_secs(10));
    let mut until = |ok: bool| {
        let mut statuses = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Load: 8 in flight at a time.
            for _ in 0..8 {
                c.send(&issue_request());
            }
            let mut all = true;
            for _ in 0..8 {
                let (_, r) = c.recv(Verb::Issue).expect("every request is answered");
                *statuses.entry(r.status().as_str()).or_insert(0) += 1;
                all &= (r.status() == Status::Ok) == ok;
                if !ok && r.status() != Status::Ok {
                    assert_eq!(r.status(), Status::Unavailable, "{r:?}");
                }
            }
            if all {
                return statuses;
            }
            assert!(Instant::now() < deadline, "{statuses:?}");
        }
    };
    println!("store up: {:?}", until(true));
    let (port, dir) = redis.kill();
    println!("store down: {:?}", until(false));
    let _redis = Redis::start(port, dir);
    println!("store back: {:?}", until(true));
    assert!(d.daemon().metrics().store_errors() > 0);
}

fn shared_redis() -> String {
    let url =
        std::env::var("CLOAKROOM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let addr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "no Redis at {url}: start it with scripts/setup.d/40-redis.sh (or set CLOAKROOM_TEST_REDIS)"
    );
    url
}

fn open(c: &mut Client, cookie: &Secret) -> Status {
    c.call(&Request::Open {
        cookie: cookie.clone(),
        take_flashes: false,
    })
    .status()
}

#[test]
fn daemons_sharing_a_network_store_see_each_others_logouts() {
    let url = shared_redis();
    // The same key ring for both (as docs/daemon.md says every daemon of a site needs).
    let a = InProcess::start_with(|c| c.store = Some(url.clone()));
    let ring = std::fs::read_to_string(a.dir.path().join("data/keys.toml")).unwrap();
    let same_ring = |c: &mut cloakroomd::Config| {
        std::fs::create_dir_all(&c.data_dir).unwrap();
        let keys = c.data_dir.join("keys.toml");
        std::fs::write(&keys, &ring).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        c.store = Some(url.clone());
    };
    let b = InProcess::start_with(same_ring);
    // A third daemon with the cache forced on: what the default avoids.
    let cached = InProcess::start_with(|c| {
        same_ring(c);
        c.cache_size = Some(1000);
    });
    let (mut ca, mut cb, mut cc) = (a.client(), b.client(), cached.client());
    let Reply::Issued(s) = ca.call(&issue_request()) else {
        panic!("ISSUE")
    };
    assert_eq!(open(&mut cb, &s.cookie), Status::Ok);
    assert_eq!(open(&mut cc, &s.cookie), Status::Ok);
    assert_eq!(
        cb.call(&Request::Logout {
            cookie: s.cookie.clone()
        }),
        Reply::Ended(true)
    );
    // The default (no cache on a network store): coherent at once.
    assert_eq!(open(&mut ca, &s.cookie), Status::Expired);
    // With a cache and no other invalidation, a daemon keeps serving the ended session.
    assert_eq!(
        open(&mut cc, &s.cookie),
        Status::Ok,
        "the cached twin should be stale; if it is not, this test cannot tell coherence apart"
    );
}
