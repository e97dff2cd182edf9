//! What both ROUTER benches share (cloakroom-zmq's `echo`, cloakroomd's `open`, which
//! includes this file by path): the load generator (one thread, N DEALER sockets,
//! `zmq::poll` over them, each socket keeping its number of requests in flight) and the
//! blocking libzmq echo server (the ceiling).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use cloakroom_zmq::zmq;

/// How one run is shaped: sockets, requests in flight on each, warm-up, measured time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) clients: usize,
    pub(crate) inflight: usize,
    pub(crate) warmup: Duration,
    pub(crate) secs: Duration,
}

/// On a thread of its own (after `setup`, e.g. pinning it to a CPU), connects
/// `shape.clients` DEALERs to `endpoint`, has `send` put `shape.inflight` requests on each,
/// then answers every reply with the next request. `reply` is handed each reply's first
/// frame and reads the rest of it. Returns replies per second over `shape.secs` after
/// `shape.warmup`.
pub(crate) fn closed_loop<S, R>(
    endpoint: &str,
    shape: Shape,
    setup: impl FnOnce() + Send + 'static,
    mut send: S,
    mut reply: R,
) -> f64
where
    S: FnMut(&zmq::Socket) + Send + 'static,
    R: FnMut(&zmq::Socket, &mut zmq::Message) + Send + 'static,
{
    let endpoint = endpoint.to_owned();
    thread::spawn(move || {
        setup();
        let ctx = zmq::Context::new();
        let socks: Vec<zmq::Socket> = (0..shape.clients)
            .map(|_| {
                let s = ctx.socket(zmq::DEALER).unwrap();
                s.set_linger(0).unwrap();
                s.connect(&endpoint).unwrap();
                s
            })
            .collect();
        for s in &socks {
            for _ in 0..shape.inflight {
                send(s);
            }
        }
        let start = Instant::now();
        let mut counted = 0u64;
        let mut window: Option<Instant> = None;
        let mut msg = zmq::Message::new();
        loop {
            let now = Instant::now();
            if window.is_none() && now - start >= shape.warmup {
                window = Some(now);
                counted = 0;
            }
            if let Some(w) = window {
                if now - w >= shape.secs {
                    return counted as f64 / (now - w).as_secs_f64();
                }
            }
            let mut items: Vec<zmq::PollItem> =
                socks.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
            zmq::poll(&mut items, 100).unwrap();
            let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
            drop(items);
            for (s, r) in socks.iter().zip(ready) {
                if !r {
                    continue;
                }
                while s.recv(&mut msg, zmq::DONTWAIT).is_ok() {
                    reply(s, &mut msg);
                    counted += 1;
                    send(s);
                }
            }
        }
    })
    .join()
    .unwrap()
}

/// A blocking libzmq ROUTER echo server on `ctx`, until `stop`: sends its endpoint on
/// `ready`, then returns every message to its sender.
pub(crate) fn blocking_echo(ctx: &zmq::Context, stop: &AtomicBool, ready: Sender<String>) {
    let s = ctx.socket(zmq::ROUTER).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(100).unwrap();
    s.bind("tcp://127.0.0.1:*").unwrap();
    ready.send(s.get_last_endpoint().unwrap().unwrap()).unwrap();
    let mut parts: Vec<zmq::Message> = Vec::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        let mut m = zmq::Message::new();
        match s.recv(&mut m, 0) {
            Ok(()) => parts.push(m),
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => panic!("echo server: {e}"),
        }
        while s.get_rcvmore().unwrap() {
            let mut m = zmq::Message::new();
            s.recv(&mut m, 0).unwrap();
            parts.push(m);
        }
        let n = parts.len();
        for (i, p) in parts.drain(..).enumerate() {
            let more = if i + 1 < n { zmq::SNDMORE } else { 0 };
            // The load generator may have gone: ignore.
            let _ = s.send(p, more);
        }
    }
}

/// How long to measure, how many rounds and how long to warm up, from the command line:
/// `--secs S` (default 1), `--rounds R` (default 3), 300 ms of warm-up. Without `--bench`
/// (`cargo test --benches` runs the benches too) a short run: 100 ms, one round, 50 ms.
pub(crate) fn timing(args: &[String]) -> (Duration, usize, Duration) {
    if !args.iter().any(|a| a == "--bench") {
        return (Duration::from_millis(100), 1, Duration::from_millis(50));
    }
    let arg = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = Duration::from_secs_f64(arg("--secs", 1.0));
    (
        secs,
        arg("--rounds", 3.0) as usize,
        Duration::from_millis(300),
    )
}

impl Shape {
    /// `clients` sockets with `inflight` requests each, measured for `secs` after `warmup`.
    pub(crate) fn new(clients: usize, inflight: usize, warmup: Duration, secs: Duration) -> Self {
        Self {
            clients,
            inflight,
            warmup,
            secs,
        }
    }
}
