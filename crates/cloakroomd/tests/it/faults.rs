//! A store that fails: a panic in a verb is answered `INTERNAL` and the daemon keeps
//! serving; a corrupt record is answered `CORRUPT`; a PostgreSQL store that becomes
//! unreachable is answered `UNAVAILABLE` (no crash) and service resumes when it returns.

use std::io::ErrorKind as IoKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloakroom::store::{Error, ErrorKind};
use cloakroom_proto::{self as proto, Data, Device, Reply, Request, Secret, Status, Verb};
use cloakroom_stores::PostgresStore;

use crate::support::{runtime, Client, Hook, Hooked, InProcess};

const NOW: u64 = 1_767_225_600;

/// The faults of a [`Hooked`] memory store: `load` panics or reports a corrupt record
/// while told to.
#[derive(Default)]
struct Faults {
    panic_on_load: AtomicBool,
    corrupt_on_load: AtomicBool,
}

/// The message of the panics this file causes on purpose.
const DELIBERATE: &str = "a bug in a store (this panic is the test's)";

/// Prints this file's deliberate panics as one line each, without a backtrace; every other
/// panic goes to the default hook as before. With `RUST_BACKTRACE=1` (as in CI), each of
/// the test's 28 panics would otherwise resolve a backtrace against the debug info of this
/// large test binary: on a busy machine with a cold page cache, reading it has taken long
/// enough for a client's 10 s receive timeout to expire first.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&DELIBERATE) {
                eprintln!("deliberate panic in a store: {DELIBERATE}");
            } else {
                default(info);
            }
        }));
    });
}

#[async_trait]
impl Hook for Faults {
    async fn before(&self, op: &'static str) -> Result<(), Error> {
        if op == "load" && self.panic_on_load.load(Ordering::SeqCst) {
            std::panic::panic_any(DELIBERATE);
        }
        if op == "load" && self.corrupt_on_load.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "the stored record does not decode (test)",
            ));
        }
        Ok(())
    }
}

type Faulty = Hooked<Faults>;

fn record(n: u8) -> proto::Record {
    let mut r = proto::Record::new(proto::IdHash([n; 32]));
    r.created = NOW;
    r.last_seen = NOW;
    r.idle_deadline = NOW + 1800;
    r.absolute_deadline = NOW + 43_200;
    r.version = 1;
    r
}

fn create(n: u8) -> Request {
    Request::Create {
        record: record(n),
        now: None,
    }
}

fn load(n: u8) -> Request {
    Request::Load {
        id_hash: proto::IdHash([n; 32]),
        now: NOW,
    }
}

/// A faulty store, and a daemon on it with its cache off (so every request reaches the
/// store).
fn faulty_daemon() -> (Arc<Faulty>, InProcess) {
    let store = Arc::new(Faulty::default());
    let on = store.clone();
    let d = InProcess::start_with(|c| {
        c.store_instance = Some(on);
        c.cache_size = Some(0);
    });
    (store, d)
}

#[test]
fn a_store_that_panics_is_answered_internal_with_the_request_id_and_the_daemon_serves_on() {
    let (store, d) = faulty_daemon();
    let mut c = d.client();
    assert_eq!(c.call(&create(1)), Reply::Done);

    quiet_deliberate_panics();
    store.hook.panic_on_load.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        let id = c.send(&load(1));
        let (got, reply) = c
            .recv(Verb::Load)
            .expect("a panicking request is answered, not left to time out");
        assert_eq!(got, id, "the INTERNAL reply carries the request's id");
        assert_eq!(reply.status(), Status::Internal, "{reply:?}");
        // Between the panics, other verbs are served.
        assert!(matches!(c.call(&Request::Ping), Reply::Pong { .. }));
    }
    // Several in flight at once, each panicking: one INTERNAL each, ids matched.
    let ids: Vec<_> = (0..8).map(|_| c.send(&load(1))).collect();
    let mut answered: Vec<_> = (0..8)
        .map(|_| {
            let (got, reply) = c.recv(Verb::Load).expect("an answer");
            assert_eq!(reply.status(), Status::Internal);
            got
        })
        .collect();
    answered.sort_by_key(|id| id.to_u64());
    assert_eq!(answered, ids);

    store.hook.panic_on_load.store(false, Ordering::SeqCst);
    let Reply::Record(r) = c.call(&load(1)) else {
        panic!("LOAD after the panics")
    };
    assert_eq!(*r, record(1));
    assert_eq!(c.call(&create(2)), Reply::Done);
}

#[test]
fn a_corrupt_record_is_answered_corrupt() {
    let (store, d) = faulty_daemon();
    let mut c = d.client();
    assert_eq!(c.call(&create(3)), Reply::Done);
    store.hook.corrupt_on_load.store(true, Ordering::SeqCst);
    match c.call(&load(3)) {
        Reply::Error { status, message } => {
            assert_eq!(status, Status::Corrupt, "{message}");
            assert!(message.contains("corrupt"), "{message}");
        }
        other => panic!("LOAD of a corrupt record answered {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL going away

const PG_START: &str = "scripts/test --setup-only (or: pg_ctlcluster 15 main start, then \
                        sudo -u postgres createdb test)";

/// The PostgreSQL server the test reaches through its proxy (host:port, `127.0.0.1:5432`
/// unless `CLOAKROOM_TEST_POSTGRES_ADDR` says otherwise).
fn pg_addr() -> String {
    std::env::var("CLOAKROOM_TEST_POSTGRES_ADDR").unwrap_or_else(|_| "127.0.0.1:5432".into())
}

/// A TCP proxy to PostgreSQL that the test can cut (every connection closed, new ones
/// closed at once) and restore: an outage of the database as the daemon sees it, without
/// stopping the server other tests use.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Both ends of every open connection; under the lock that `cut` is checked under.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut2, stop2, open2) = (cut.clone(), stop.clone(), open.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let down = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == IoKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = down.set_nonblocking(false);
                if cut2.load(Ordering::SeqCst) {
                    continue; // closed at once
                }
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                if cut2.load(Ordering::SeqCst) {
                    continue;
                }
                open.push(down.try_clone().unwrap());
                open.push(up.try_clone().unwrap());
                drop(open);
                let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                thread::spawn(move || pump(down, up));
                thread::spawn(move || pump(u2, d2));
            }
        });
        Self {
            port,
            cut,
            stop,
            open,
        }
    }

    fn cut(&self) {
        let mut open = self.open.lock().unwrap();
        self.cut.store(true, Ordering::SeqCst);
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn issue(c: &mut Client) -> Reply {
    c.call(&Request::Issue {
        user_id: Some("outage".into()),
        data: Data::new(),
        device: Device::new(),
    })
}

fn open(c: &mut Client, cookie: &Secret) -> Reply {
    c.call(&Request::Open {
        cookie: cookie.clone(),
        take_flashes: false,
    })
}

#[test]
fn postgres_outage_is_unavailable_without_a_crash_and_service_resumes() {
    let proxy = Proxy::start(pg_addr());
    let url = format!("postgres://postgres:postgres@127.0.0.1:{}/test", proxy.port);
    let rt = runtime();
    // A schema of this test's own: other engineers' tests share the server.
    let store = rt
        .block_on(
            PostgresStore::builder(&url)
                .with_schema("cloakroomd_outage_test")
                .with_pool_size(4)
                .with_connect_timeout(Duration::from_millis(500))
                .with_command_timeout(Duration::from_millis(1000))
                .connect(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {} ({e}); start it: {PG_START}",
                pg_addr()
            )
        });
    let d = InProcess::start_in(rt, |c| {
        c.store_instance = Some(Arc::new(store));
        c.cache_size = Some(0);
    });
    let mut c = d.client();
    let Reply::Issued(issued) = issue(&mut c) else {
        panic!("ISSUE before the outage")
    };
    assert!(matches!(open(&mut c, &issued.cookie), Reply::Opened(_)));

    // Load from a second client all along: every request is answered, OK or UNAVAILABLE.
    let endpoint = d.endpoint();
    let cookie = issued.cookie.clone();
    let loading = Arc::new(AtomicBool::new(true));
    let (ok, unavailable) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loader = {
        let (loading, ok, unavailable) = (loading.clone(), ok.clone(), unavailable.clone());
        thread::spawn(move || {
            let ctx = cloakroom_zmq::zmq::Context::new();
            let mut c = Client::connect(&ctx, &endpoint);
            while loading.load(Ordering::SeqCst) {
                match open(&mut c, &cookie) {
                    Reply::Opened(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Reply::Error {
                        status: Status::Unavailable,
                        ..
                    } => unavailable.fetch_add(1, Ordering::SeqCst),
                    other => panic!("under the outage OPEN answered {other:?}"),
                };
            }
        })
    };
    // Each wait below is for an event, bounded only so that a broken daemon fails the test
    // instead of hanging it (a busy machine may take long to schedule the loading thread).
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "within 20 s: {what}");
            thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for("the second client is served before the outage", &|| {
        ok.load(Ordering::SeqCst) > 0
    });

    proxy.cut();
    let started = Instant::now();
    for _ in 0..5 {
        let reply = open(&mut c, &issued.cookie);
        assert_eq!(reply.status(), Status::Unavailable, "{reply:?}");
        let reply = issue(&mut c);
        assert_eq!(reply.status(), Status::Unavailable, "{reply:?}");
    }
    eprintln!(
        "10 requests during the outage answered UNAVAILABLE in {:?}",
        started.elapsed()
    );
    // Keep it down until the second client has met it too.
    wait_for("the second client meets the outage", &|| {
        unavailable.load(Ordering::SeqCst) > 0
    });
    // The daemon itself is up.
    assert!(matches!(c.call(&Request::Ping), Reply::Pong { .. }));

    proxy.restore();
    // Service resumes: OPEN and ISSUE both succeed again, without restarting anything. A
    // pooled connection that was cut may still fail one request as UNAVAILABLE (the pool
    // learns it is dead from that failure); anything else is a failure of the test.
    let back = Instant::now();
    let (mut opened, mut issued_again) = (false, false);
    while !(opened && issued_again) {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "service did not resume within 10 s of PostgreSQL coming back"
        );
        if !opened {
            match open(&mut c, &issued.cookie) {
                Reply::Opened(s) => {
                    assert_eq!(s.user_id.as_deref(), Some("outage"));
                    opened = true;
                }
                reply => assert_eq!(reply.status(), Status::Unavailable, "{reply:?}"),
            }
        }
        if !issued_again {
            match issue(&mut c) {
                Reply::Issued(_) => issued_again = true,
                reply => assert_eq!(reply.status(), Status::Unavailable, "{reply:?}"),
            }
        }
        if !(opened && issued_again) {
            thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "service resumed {:?} after the proxy came back",
        back.elapsed()
    );
    let ok_at_restore = ok.load(Ordering::SeqCst);
    wait_for("the second client is served again", &|| {
        ok.load(Ordering::SeqCst) > ok_at_restore
    });

    loading.store(false, Ordering::SeqCst);
    loader
        .join()
        .expect("the loading client saw only OK and UNAVAILABLE");
    eprintln!(
        "the second client's OPENs: {} OK, {} UNAVAILABLE",
        ok.load(Ordering::SeqCst),
        unavailable.load(Ordering::SeqCst)
    );
}
