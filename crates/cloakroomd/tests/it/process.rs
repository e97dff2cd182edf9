//! The binary: first start, refusals, signals, kill -9.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use cloakroom_proto::{Data, Device, Reply, Request, Secret, Status, Verb};
use cloakroom_zmq::zmq;

use crate::support::{free_port, wait_for_ping, Client, Process};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn ipc(dir: &std::path::Path) -> String {
    format!("ipc://{}/cloakroom-data/cloakroomd.sock", dir.display())
}

/// The daemon with no flags in `dir`, once it answers, and a client of its default socket.
fn started(dir: &std::path::Path) -> (Process, zmq::Context, Client) {
    let p = Process::spawn(dir, &[]);
    let ctx = zmq::Context::new();
    wait_for_ping(&ctx, &ipc(dir), Duration::from_secs(20));
    let c = Client::connect(&ctx, &ipc(dir));
    (p, ctx, c)
}

fn issue(c: &mut Client) -> Secret {
    match c.call(&Request::Issue {
        user_id: Some("950".into()),
        data: Data::new(),
        device: Device::new(),
    }) {
        Reply::Issued(i) => i.cookie,
        other => panic!("ISSUE: {other:?}"),
    }
}

#[test]
fn starts_with_no_flags_in_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::spawn(dir.path(), &[]);
    let ctx = zmq::Context::new();
    wait_for_ping(&ctx, &ipc(dir.path()), Duration::from_secs(20));
    let data = dir.path().join("cloakroom-data");
    assert_eq!(mode(&data.join("keys.toml")), 0o600);
    assert_eq!(mode(&data.join("cloakroomd.sock")), 0o600);
    assert_eq!(mode(&data.join("events.sock")), 0o600);
    assert_eq!(mode(&data), 0o700);
    assert!(
        data.join("sessions.db").exists(),
        "the default SQLite store"
    );
    let mut c = Client::connect(&ctx, &ipc(dir.path()));
    let cookie = issue(&mut c);
    assert!(matches!(
        c.call(&Request::Open {
            cookie,
            take_flashes: false
        }),
        Reply::Opened(_)
    ));
    p.signal(libc_sigterm());
    let status = p
        .wait(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
    let stderr = p.stderr();
    assert!(
        stderr.contains("keys.toml"),
        "says it wrote the key ring: {stderr}"
    );
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn a_network_address_without_curve_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for ep in ["tcp://0.0.0.0:5999", "tcp://*:5999"] {
        let mut p = Process::spawn(dir.path(), &["--bind", ep]);
        let status = p.wait(Duration::from_secs(15)).expect("exits");
        assert_eq!(status.code(), Some(2), "{ep}");
        let stderr = p.stderr();
        assert!(
            stderr.contains("CURVE") && stderr.contains("allowed_clients"),
            "{stderr}"
        );
        assert!(stderr.lines().count() <= 2, "one line: {stderr}");
    }
    // Nor is a feed on a network address.
    let mut p = Process::spawn(dir.path(), &["--events", "tcp://0.0.0.0:5998"]);
    assert_eq!(p.wait(Duration::from_secs(15)).unwrap().code(), Some(2));
    // Loopback is fine.
    let port = free_port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let _p = Process::spawn(dir.path(), &["--bind", &ep]);
    wait_for_ping(&zmq::Context::new(), &ep, Duration::from_secs(20));
}

#[test]
fn an_unknown_config_key_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "bnid = []\n").unwrap();
    let mut p = Process::spawn(dir.path(), &["--config", "c.toml"]);
    assert_eq!(p.wait(Duration::from_secs(15)).unwrap().code(), Some(2));
    assert!(p.stderr().contains("bnid"));
}

#[test]
fn sigterm_answers_what_is_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _ctx, mut c) = started(dir.path());
    let n = 500;
    for _ in 0..n {
        c.send(&Request::Issue {
            user_id: None,
            data: Data::new(),
            device: Device::new(),
        });
    }
    // The daemon is at work on them: stop it now.
    let (_, first) = c.recv(Verb::Issue).expect("a reply");
    assert_eq!(first.status(), Status::Ok);
    p.signal(libc_sigterm());
    // Every request is answered: done, or refused because the daemon is stopping.
    let (mut ok, mut refused) = (1, 0);
    while ok + refused < n {
        let (_, reply) = c.recv(Verb::Issue).unwrap_or_else(|| {
            panic!("every request in flight is answered: {ok} done, {refused} refused of {n}")
        });
        match reply.status() {
            Status::Ok => ok += 1,
            Status::Unavailable => refused += 1,
            other => panic!("{other}"),
        }
    }
    println!("{ok} done, {refused} refused while stopping");
    assert!(ok > 0);
    let status = p.wait(Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sighup_reloads_the_key_ring_and_keeps_the_old_one_if_the_new_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _ctx, mut c) = started(dir.path());
    let cookie = issue(&mut c);
    let keys = dir.path().join("cloakroom-data/keys.toml");
    let write = |text: &str| {
        let tmp = keys.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&tmp, &keys).unwrap();
    };
    let open = |c: &mut Client| {
        c.call(&Request::Open {
            cookie: cookie.clone(),
            take_flashes: false,
        })
        .status()
    };
    // A bad file: logged, the old ring kept.
    write("this is not a key ring");
    p.signal(1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(open(&mut c), Status::Ok);
    // A new ring without the old key: the old cookie stops verifying.
    let ring = cloakroom::KeyRing::generate().unwrap();
    write(&ring.to_toml());
    p.signal(1);
    let until = Instant::now() + Duration::from_secs(10);
    while open(&mut c) != Status::Invalid {
        assert!(Instant::now() < until, "the new ring was not loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    p.signal(libc_sigterm());
    assert_eq!(p.wait(Duration::from_secs(15)).unwrap().code(), Some(0));
    let stderr = p.stderr();
    assert!(stderr.contains("keeping the old key ring"), "{stderr}");
}

#[test]
fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::spawn(dir.path(), &[]);
    let ctx = zmq::Context::new();
    let ep = ipc(dir.path());
    wait_for_ping(&ctx, &ep, Duration::from_secs(20));
    let mut c = Client::connect_with(&ctx, &ep, Duration::from_millis(500));
    let session = issue(&mut c);
    // 16 writes in flight: each ISSUE creates a session, each SET writes a key.
    let mut acked_cookies = Vec::new();
    let mut acked_keys = Vec::new();
    let mut in_flight = std::collections::HashMap::new();
    let started = Instant::now();
    let mut n = 0u64;
    let mut killed = false;
    loop {
        while !killed && in_flight.len() < 16 {
            n += 1;
            let (req, what) = if n % 2 == 0 {
                (
                    Request::Issue {
                        user_id: Some(format!("u{n}")),
                        data: Data::new(),
                        device: Device::new(),
                    },
                    None,
                )
            } else {
                (
                    Request::Set {
                        cookie: Some(session.clone()),
                        changes: vec![cloakroom_proto::Change::Set(
                            format!("k{n}"),
                            cloakroom_proto::Value::from(n),
                        )],
                    },
                    Some(n),
                )
            };
            let id = c.send(&req);
            in_flight.insert(id, (req.verb(), what));
        }
        if !killed && started.elapsed() > Duration::from_millis(1500) {
            p.signal(9);
            killed = true;
        }
        let Some(frames) = c.recv_raw() else {
            if killed {
                break;
            }
            continue;
        };
        let id = cloakroom_proto::Reply::peek_id(&frames).unwrap();
        let (verb, what) = in_flight.remove(&id).unwrap();
        let (_, reply) = Reply::decode(&frames, verb, &cloakroom_proto::Limits::default()).unwrap();
        match (reply, what) {
            (Reply::Issued(i), None) => acked_cookies.push(i.cookie),
            (Reply::Cookie(None), Some(k)) => acked_keys.push(k),
            (other, _) => panic!("{other:?}"),
        }
    }
    let _ = p.wait(Duration::from_secs(5));
    drop(p);
    let _p = Process::spawn(dir.path(), &[]);
    wait_for_ping(&ctx, &ep, Duration::from_secs(20));
    let mut c = Client::connect(&ctx, &ep);
    for cookie in &acked_cookies {
        assert!(
            matches!(
                c.call(&Request::Open {
                    cookie: cookie.clone(),
                    take_flashes: false
                }),
                Reply::Opened(_)
            ),
            "an acknowledged session is gone after kill -9"
        );
    }
    let Reply::Opened(s) = c.call(&Request::Open {
        cookie: session,
        take_flashes: false,
    }) else {
        panic!("the session is gone")
    };
    for k in &acked_keys {
        assert!(
            s.data.contains_key(&format!("k{k}")),
            "acknowledged key k{k} lost"
        );
    }
    println!(
        "kill -9 under load: {} acknowledged sessions and {} acknowledged keys, all present after restart",
        acked_cookies.len(),
        acked_keys.len()
    );
    assert!(
        acked_cookies.len() + acked_keys.len() > 50,
        "the load was too light to tell"
    );
}
