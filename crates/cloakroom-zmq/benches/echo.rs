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
use std::time::Duration;

use futures::{SinkExt, StreamExt};

#[path = "support/dealers.rs"]
mod dealers;
use dealers::{blocking_echo, closed_loop, timing, Shape};
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
            Server::Blocking => blocking_echo(&ctx, &stop2, tx),
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

/// Drives DEALERs as `shape` says; returns req/s over `shape.secs`.
fn load(endpoint: &str, shape: Shape, pin: bool) -> f64 {
    let pin = move || {
        if pin {
            pin_to(1);
        }
    };
    let payload = [0x5au8; 32];
    let send = move |s: &zmq::Socket| s.send(&payload[..], 0).unwrap();
    closed_loop(endpoint, shape, pin, send, |_, _| {})
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (secs, rounds, warmup) = timing(&args);
    let pin = args.iter().any(|a| a == "--pin");

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
                results[i].push(load(&ep, Shape::new(clients, inflight, warmup, secs), pin));
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
