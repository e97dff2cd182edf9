//! `OPEN` round trips per second against the daemon, beside `redis-benchmark -t get` and a
//! ROUTER/DEALER echo server, side by side in one run (issue 13's benchmark).
//!
//! - **cloakroomd**: started in process on tcp loopback with its defaults (SQLite store in
//!   a temporary directory, the session cache on); one live session is issued, then every
//!   request is `OPEN` of its cookie (warm: the first rounds fill the cache).
//! - **echo**: a blocking libzmq ROUTER thread that sends every message straight back: the
//!   ceiling of a ROUTER/DEALER round trip on this machine, same frames, same load
//!   generator.
//! - **Redis GET**: `redis-benchmark -t get -c N [-P 16]` against 127.0.0.1:6379, the same
//!   client counts and depths.
//!
//! One load generator drives the daemon and the echo server the same way, as
//! redis-benchmark drives Redis: one thread, N DEALER sockets, `zmq::poll` over them, each
//! socket keeping its number of requests in flight. Shapes: 1, 16 and 50 clients with 1 and
//! with 16 requests in flight each.
//!
//! Run: `cargo bench -p cloakroomd --bench open -- [--secs S] [--rounds R]` (or
//! `scripts/bench-daemon`). Rounds go round-robin over the three servers, so a burst of load
//! from elsewhere hits all alike; each figure is the median of its rounds. Only ratios
//! within one run mean anything: the machine is shared. Without `--bench` (as in
//! `cargo test --benches`) it runs one very short round.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cloakroom_proto::{Data, Device, Limits, Reply, Request, RequestId, Secret, Value, Verb};
use cloakroom_zmq::zmq;

#[path = "../../cloakroom-zmq/benches/support/dealers.rs"]
mod dealers;
use dealers::{blocking_echo, closed_loop, timing, Shape};

const SHAPES: [(usize, usize); 6] = [(1, 1), (16, 1), (50, 1), (1, 16), (16, 16), (50, 16)];

/// A blocking libzmq ROUTER echo server on a thread of its own.
fn start_echo() -> (String, Arc<AtomicBool>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stop2 = Arc::clone(&stop);
    let handle = thread::spawn(move || {
        blocking_echo(&zmq::Context::new(), &stop2, tx);
    });
    (rx.recv().unwrap(), stop, handle)
}

/// One blocking round trip on a fresh DEALER (setup only).
fn round_trip(endpoint: &str, request: &Request) -> Reply {
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(10_000).unwrap();
    s.connect(endpoint).unwrap();
    s.send_multipart(request.encode(RequestId::from_u64(1)), 0)
        .unwrap();
    let frames = s.recv_multipart(0).expect("cloakroomd answers within 10 s");
    let (_, reply) = Reply::decode(&frames, request.verb(), &Limits::default()).unwrap();
    reply
}

/// Drives DEALERs as `shape` says, every request `frames` with a fresh request id; returns
/// replies per second over `shape.secs` after `shape.warmup`. Frame 3 of every reply must
/// be `word` (`OK` from the daemon; the verb itself from the echo server).
fn load(endpoint: &str, frames: &[Vec<u8>], word: &'static [u8], shape: Shape) -> f64 {
    let frames = frames.to_vec();
    let mut next_id = 0u64;
    let send = move |s: &zmq::Socket| {
        next_id += 1;
        let id = next_id.to_be_bytes();
        let last = frames.len() - 1;
        for (i, f) in frames.iter().enumerate() {
            let more = if i < last { zmq::SNDMORE } else { 0 };
            let data: &[u8] = if i == 2 { &id } else { f };
            s.send(data, more).unwrap();
        }
    };
    // The rest of the message: frame 3 is the status.
    let reply = move |s: &zmq::Socket, msg: &mut zmq::Message| {
        let mut index = 0;
        while s.get_rcvmore().unwrap() {
            s.recv(msg, 0).unwrap();
            index += 1;
            if index == 3 {
                assert_eq!(&msg[..], word, "an unexpected reply");
            }
        }
    };
    closed_loop(endpoint, shape, || {}, send, reply)
}

/// `redis-benchmark -t get` at this shape for about `secs`; `None` (with the reason on
/// stderr) when it or Redis is missing.
fn redis_get(clients: usize, pipeline: usize, secs: Duration, guess: f64) -> Option<f64> {
    let n = ((guess * secs.as_secs_f64()) as u64).clamp(2_000, 5_000_000);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", "6379", "-t", "get", "-q"])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
        .args(["-n", &n.to_string()])
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!(
                "redis-benchmark failed (is Redis running on 127.0.0.1:6379? scripts/test \
                 starts it): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("redis-benchmark not found ({e}): apt-get install redis-tools");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.split(['\r', '\n']).rfind(|l| l.starts_with("GET: "))?;
    line["GET: ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (secs, rounds, warmup) = timing(&args);

    // The daemon, in process: its own multi-threaded runtime (2 workers, the machine's
    // cores), SQLite in a temporary directory, tcp loopback like Redis.
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = cloakroomd::Config::new(dir.path());
    config.bind = vec!["tcp://127.0.0.1:*".into()];
    config.events = Some("tcp://127.0.0.1:*".into());
    let running = rt
        .block_on(cloakroomd::start(config))
        .unwrap_or_else(|e| panic!("cannot start cloakroomd: {e}"));
    let daemon = running.endpoints()[0].clone();

    // One live session, and the OPEN of its cookie.
    let mut data = Data::new();
    data.insert("theme".into(), Value::from("dark"));
    let issued = round_trip(
        &daemon,
        &Request::Issue {
            user_id: Some("bench".into()),
            data,
            device: Device::new(),
        },
    );
    let Reply::Issued(issued) = issued else {
        panic!("ISSUE answered {issued:?}")
    };
    let open = Request::Open {
        cookie: Secret::new(issued.cookie.expose()),
        take_flashes: false,
    };
    match round_trip(&daemon, &open) {
        Reply::Opened(s) => assert_eq!(s.user_id.as_deref(), Some("bench")),
        other => panic!("OPEN answered {other:?}"),
    }
    assert_eq!(open.verb(), Verb::Open);
    let frames = open.encode(RequestId::from_u64(0));

    println!(
        "OPEN (cloakroomd, SQLite, warm) vs redis-benchmark -t get vs ROUTER/DEALER echo, \
         req/s, median of {rounds} x {secs:?}, tcp loopback"
    );
    let mut table = Vec::new();
    for &(clients, inflight) in &SHAPES {
        let (mut opens, mut gets, mut echos) = (Vec::new(), Vec::new(), Vec::new());
        let shape = Shape::new(clients, inflight, warmup, secs);
        for _ in 0..rounds {
            opens.push(load(&daemon, &frames, b"OK", shape));
            let (echo, stop, h) = start_echo();
            echos.push(load(&echo, &frames, b"OPEN", shape));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap();
            let guess = gets.last().copied().unwrap_or(40_000.0 * inflight as f64);
            if let Some(g) = redis_get(clients, inflight, secs, guess) {
                gets.push(g);
            }
        }
        let (open, get, echo) = (median(&mut opens), median(&mut gets), median(&mut echos));
        println!(
            "  {clients:>2} x {inflight:>2}  OPEN {open:>9.0}  Redis GET {get:>9.0}  echo {echo:>9.0}"
        );
        table.push((clients, inflight, open, get, echo));
    }
    println!();
    println!("| clients x in flight | OPEN req/s | Redis GET req/s | echo req/s | OPEN / GET | OPEN / echo | goal |");
    println!("|---|---|---|---|---|---|---|");
    for (c, f, open, get, echo) in table {
        let goal = if (c, f) == (1, 1) {
            format!(
                "OPEN ≥ 0.90 echo: {}",
                if open >= 0.9 * echo { "met" } else { "missed" }
            )
        } else {
            format!("OPEN ≥ GET: {}", if open >= get { "met" } else { "missed" })
        };
        println!(
            "| {c} x {f} | {open:.0} | {get:.0} | {echo:.0} | {:.2}x | {:.2}x | {goal} |",
            open / get,
            open / echo
        );
    }
    rt.block_on(running.shutdown());
}
