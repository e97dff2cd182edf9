//! ROUTER/DEALER echo, requests per second, side by side in one run:
//! cloakroom-zmq (tokio current_thread), tmq (tokio current_thread) and a blocking libzmq
//! loop on a dedicated thread (the ceiling), at 1 client x 1 in flight, 16 x 16 and 50 x 16.
//!
//! One load generator drives every server the same way: one thread, N DEALER sockets,
//! `zmq::poll` over them, each socket keeping its number of requests in flight.
//!
//! Run: `cargo bench -p cloakroom-zmq --bench echo -- [--secs S] [--rounds R] [--pin]`
//! (`--pin` puts the server thread on CPU 0 and the load generator on CPU 1).
//! Only ratios within one run mean anything: the machine is shared.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tmq::AsZmqSocket;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Server {
    Cloakroom,
    Tmq,
    Blocking,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Cloakroom => "cloakroom-zmq",
            Server::Tmq => "tmq 0.5",
            Server::Blocking => "blocking libzmq thread",
        }
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; the call reads
    // `size_of::<cpu_set_t>()` bytes of it and only changes the calling thread's affinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

async fn wait_for(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts an echo server; returns its endpoint, a stop flag and its thread.
fn start_server(kind: Server, pin: bool) -> (String, Arc<AtomicBool>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let stop2 = stop.clone();
    let handle = thread::spawn(move || {
        if pin {
            pin_to(0);
        }
        let ctx = zmq::Context::new();
        match kind {
            Server::Blocking => {
                let s = ctx.socket(zmq::ROUTER).unwrap();
                s.set_linger(0).unwrap();
                s.set_rcvtimeo(100).unwrap();
                s.bind("tcp://127.0.0.1:*").unwrap();
                tx.send(s.get_last_endpoint().unwrap().unwrap()).unwrap();
                while !stop2.load(Ordering::Relaxed) {
                    let mut parts = Vec::with_capacity(2);
                    let mut m = zmq::Message::new();
                    match s.recv(&mut m, 0) {
                        Ok(()) => parts.push(m),
                        Err(zmq::Error::EAGAIN) => continue,
                        Err(e) => panic!("{e}"),
                    }
                    while s.get_rcvmore().unwrap() {
                        let mut m = zmq::Message::new();
                        s.recv(&mut m, 0).unwrap();
                        parts.push(m);
                    }
                    let n = parts.len();
                    for (i, p) in parts.into_iter().enumerate() {
                        s.send(p, if i + 1 < n { zmq::SNDMORE } else { 0 }).unwrap();
                    }
                }
            }
            Server::Cloakroom => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut s = cloakroom_zmq::Socket::new(&ctx, cloakroom_zmq::SocketKind::Router)
                        .unwrap();
                    s.bind("tcp://127.0.0.1:*").unwrap();
                    tx.send(s.last_endpoint().unwrap()).unwrap();
                    let counters = s.counters();
                    let echo = tokio::spawn(async move {
                        while let Ok(m) = s.recv().await {
                            // Unroutable once the load generator has gone: ignore.
                            let _ = s.send(m).await;
                        }
                    });
                    wait_for(&stop2).await;
                    echo.abort();
                    assert_eq!(counters.missed_wakeups(), 0);
                });
            }
            Server::Tmq => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut s = tmq::router(&ctx).bind("tcp://127.0.0.1:*").unwrap();
                    let ep = s.get_socket().get_last_endpoint().unwrap().unwrap();
                    tx.send(ep).unwrap();
                    let echo = tokio::spawn(async move {
                        while let Some(Ok(m)) = s.next().await {
                            if s.send(m).await.is_err() {
                                break;
                            }
                        }
                    });
                    wait_for(&stop2).await;
                    echo.abort();
                });
            }
        }
    });
    (rx.recv().unwrap(), stop, handle)
}

/// Drives `clients` DEALERs with `inflight` requests each; returns req/s over `secs`.
fn load(
    endpoint: &str,
    clients: usize,
    inflight: usize,
    warmup: Duration,
    secs: Duration,
    pin: bool,
) -> f64 {
    let endpoint = endpoint.to_string();
    thread::spawn(move || {
        if pin {
            pin_to(1);
        }
        let ctx = zmq::Context::new();
        let socks: Vec<zmq::Socket> = (0..clients)
            .map(|_| {
                let s = ctx.socket(zmq::DEALER).unwrap();
                s.set_linger(0).unwrap();
                s.connect(&endpoint).unwrap();
                s
            })
            .collect();
        let payload = [0x5au8; 32];
        for s in &socks {
            for _ in 0..inflight {
                s.send(&payload[..], 0).unwrap();
            }
        }
        let start = Instant::now();
        let mut counted = 0u64;
        let mut window: Option<Instant> = None;
        let mut msg = zmq::Message::new();
        loop {
            let now = Instant::now();
            if window.is_none() && now - start >= warmup {
                window = Some(now);
                counted = 0;
            }
            if let Some(w) = window {
                if now - w >= secs {
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
                    counted += 1;
                    s.send(&payload[..], 0).unwrap();
                }
            }
        }
    })
    .join()
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = Duration::from_secs_f64(arg("--secs", 1.0));
    let rounds = arg("--rounds", 3.0) as usize;
    let pin = args.iter().any(|a| a == "--pin");
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep it short.
    let quick = !args.iter().any(|a| a == "--bench");
    let (secs, rounds) = if quick {
        (Duration::from_millis(100), 1)
    } else {
        (secs, rounds)
    };
    let warmup = Duration::from_millis(if quick { 50 } else { 300 });

    let shapes = [(1usize, 1usize), (16, 16), (50, 16)];
    let servers = [Server::Cloakroom, Server::Tmq, Server::Blocking];
    println!("ROUTER/DEALER echo, req/s, median of {rounds} x {secs:?} (pinned: {pin})");
    // Rounds go round-robin over the servers, so a burst of load from elsewhere on the
    // machine hits all three alike; each figure is the median of its rounds.
    let mut table = Vec::new();
    for &(clients, inflight) in &shapes {
        let mut results = vec![Vec::new(); servers.len()];
        for _ in 0..rounds {
            for (i, &server) in servers.iter().enumerate() {
                let (ep, stop, h) = start_server(server, pin);
                results[i].push(load(&ep, clients, inflight, warmup, secs, pin));
                stop.store(true, Ordering::Relaxed);
                h.join().unwrap();
            }
        }
        let mut row = Vec::new();
        for (i, &server) in servers.iter().enumerate() {
            let r = &mut results[i];
            r.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let median = r[r.len() / 2];
            println!(
                "  {clients:>2} x {inflight:>2}  {:<24} {median:>10.0} req/s",
                server.name()
            );
            row.push(median);
        }
        table.push(((clients, inflight), row));
    }
    println!();
    println!(
        "| clients x in flight | cloakroom-zmq / tmq | cloakroom-zmq / blocking | tmq / blocking |"
    );
    println!("|---|---|---|---|");
    for ((c, f), row) in &table {
        println!(
            "| {c} x {f} | {:.2}x | {:.2}x | {:.2}x |",
            row[0] / row[1],
            row[0] / row[2],
            row[1] / row[2]
        );
    }
}
