//! Integration tests of cloakroom-zmq: one test per rule of docs/zmq-event-loop.md, each also run
//! against a deliberately broken event loop (`Broken::*`, feature `broken-variants`) to
//! show that it fails when its rule is broken. Every scenario is bounded by watchdogs and
//! uses loopback TCP, ipc or inproc only.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use cloakroom_zmq::{
    curve_available, Broken, Counters, CurveKeyPair, ErrorKind, Multipart, Socket, SocketBuilder,
    SocketKind, ZapHandler,
};
use rand::Rng;

type Outcome = Result<(), String>;

/// An error as the text a scenario fails with.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A name no other test of this process (`cargo test` runs them as threads) or of another
/// process uses at the same time, for abstract ipc endpoints.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `f` on its own thread and fails if it does not finish within `limit` (a hung
/// scenario is then left behind; nextest runs each test in its own process).
fn with_deadline<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(format!("watchdog: no result within {limit:?}")),
    }
}

/// Runs the future `scenario` makes on a current-thread runtime, under [`with_deadline`].
fn on_runtime<F>(limit: Duration, scenario: impl FnOnce() -> F + Send + 'static) -> Outcome
where
    F: std::future::Future<Output = Outcome>,
{
    with_deadline(limit, move || current_thread_rt().block_on(scenario()))
}

/// `Ok` when the socket's loop lost no wakeup (`counters` are its).
fn no_missed_wakeups(counters: &Counters) -> Outcome {
    match counters.missed_wakeups() {
        0 => Ok(()),
        n => Err(format!("missed wakeups: {n}")),
    }
}

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn msg(parts: &[&[u8]]) -> Multipart {
    parts.iter().map(|p| zmq::Message::from(*p)).collect()
}

/// Binds `socket` to a free loopback tcp port; the endpoint it got.
fn on_loopback(socket: &Socket) -> Result<String, String> {
    socket.bind("tcp://127.0.0.1:*").map_err(text)?;
    socket.last_endpoint().map_err(text)
}

/// Builds the socket and binds it to a free loopback tcp port; it and its endpoint.
fn listening(builder: SocketBuilder, ctx: &zmq::Context) -> Result<(Socket, String), String> {
    let socket = builder.build(ctx).map_err(text)?;
    let endpoint = on_loopback(&socket)?;
    Ok((socket, endpoint))
}

/// A listening ROUTER on `variant`'s loop whose safety timer looks for lost wakeups every
/// 100 ms (`Counters::missed_wakeups`), and its endpoint.
fn watched_router(variant: Broken, ctx: &zmq::Context) -> Result<(Socket, String), String> {
    let builder = SocketBuilder::new(SocketKind::Router)
        .safety_interval(Duration::from_millis(100))
        .broken(variant);
    listening(builder, ctx)
}

/// A plain libzmq DEALER, linger 0, connected to `endpoint`.
fn raw_dealer(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket, String> {
    let s = ctx.socket(zmq::DEALER).map_err(text)?;
    s.set_linger(0).map_err(text)?;
    s.connect(endpoint).map_err(text)?;
    Ok(s)
}

/// `peer` says hi; the message `server` received from it within 2 s (its routing id first).
async fn hello_from(peer: &zmq::Socket, server: &mut Socket) -> Result<Multipart, String> {
    peer.send(&b"hi"[..], 0).map_err(text)?;
    tokio::time::timeout(Duration::from_secs(2), server.recv())
        .await
        .map_err(|_| "no hello")?
        .map_err(text)
}

/// Runs a broken variant's result through its check: it must fail, or the test would not
/// catch the bug; `passed` says which variant passed which test.
#[track_caller]
fn assert_caught<T: std::fmt::Debug, E: std::fmt::Debug>(r: Result<T, E>, passed: &str) {
    eprintln!("broken variant: {r:?}");
    assert!(r.is_err(), "{passed}");
}

/// A rule's two tests: `$scenario` (a function of the variant) passes on the correct loop
/// in `$holds`, and fails in `$twin` on the loop with the rule broken (`$broken`);
/// `$passed` is the twin's message should the broken loop pass.
macro_rules! rule_and_broken_twin {
    ($scenario:expr, $holds:ident, $twin:ident: $broken:expr, $passed:literal) => {
        #[test]
        fn $holds() {
            ($scenario)(Broken::None).unwrap();
        }

        #[test]
        fn $twin() {
            assert_caught(($scenario)($broken), $passed);
        }
    };
}

// ---------------------------------------------------------------------------------------
// Rule: drain until EAGAIN (bursts).

const BURST_CLIENTS: u64 = 8;
const BURST_PER_CLIENT: u64 = 12_500; // 8 x 12,500 = 100,000

fn bursts(variant: Broken) -> Outcome {
    with_deadline(Duration::from_secs(60), move || bursts_inner(variant))
}

fn bursts_inner(variant: Broken) -> Outcome {
    let rt = current_thread_rt();
    let server_ctx = zmq::Context::new();
    let client_ctx = zmq::Context::new();
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async move {
        let (mut server, endpoint) = watched_router(variant, &server_ctx)?;
        let counters = server.counters();

        let mut clients = Vec::new();
        for c in 0..BURST_CLIENTS {
            let ctx = client_ctx.clone();
            let endpoint = endpoint.clone();
            let stop = stop.clone();
            clients.push(thread::spawn(move || {
                let s = raw_dealer(&ctx, &endpoint).unwrap();
                s.set_sndtimeo(100).unwrap();
                let mut rng = rand::thread_rng();
                let mut seq = 0u64;
                while seq < BURST_PER_CLIENT && !stop.load(Ordering::Relaxed) {
                    let burst = rng.gen_range(1..=2_000).min(BURST_PER_CLIENT - seq);
                    let mut sent = 0;
                    while sent < burst && !stop.load(Ordering::Relaxed) {
                        let mut body = [0u8; 16];
                        body[..8].copy_from_slice(&c.to_be_bytes());
                        body[8..].copy_from_slice(&seq.to_be_bytes());
                        match s.send(&body[..], 0) {
                            Ok(()) => {
                                seq += 1;
                                sent += 1;
                            }
                            Err(zmq::Error::EAGAIN) => {}
                            Err(e) => panic!("client send: {e}"),
                        }
                    }
                    // A pause between bursts: the receiver goes back to sleep, and the
                    // next burst must wake it.
                    thread::sleep(Duration::from_millis(rng.gen_range(0..=20)));
                }
                // Keep the socket open until the server is done: with linger 0, closing
                // it would throw away whatever is still queued on our side.
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(5));
                }
            }));
        }

        let total = BURST_CLIENTS * BURST_PER_CLIENT;
        let mut next = vec![0u64; BURST_CLIENTS as usize];
        let mut got = 0u64;
        let mut last_progress = Instant::now();
        let result = loop {
            match tokio::time::timeout(Duration::from_millis(100), server.recv()).await {
                Ok(Ok(m)) => {
                    if m.len() != 2 || m[1].len() != 16 {
                        break Err(format!("bad message shape: {} frames", m.len()));
                    }
                    let c = u64::from_be_bytes(m[1][..8].try_into().unwrap()) as usize;
                    let seq = u64::from_be_bytes(m[1][8..].try_into().unwrap());
                    if c >= next.len() || seq != next[c] {
                        break Err(format!("client {c}: got {seq}, expected {}", next[c]));
                    }
                    next[c] += 1;
                    got += 1;
                    last_progress = Instant::now();
                    if got == total {
                        break Ok(());
                    }
                }
                Ok(Err(e)) => break Err(format!("recv: {e}")),
                Err(_) => {}
            }
            if counters.missed_wakeups() > 0 {
                break Err(format!(
                    "{} missed wakeups after {got} messages",
                    counters.missed_wakeups()
                ));
            }
            if last_progress.elapsed() > Duration::from_secs(5) {
                break Err(format!(
                    "stalled: no message for 5 s after {got} of {total}"
                ));
            }
        };
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().map_err(|_| "client thread panicked".to_string())?;
        }
        result?;
        no_missed_wakeups(&counters)
    })
}

rule_and_broken_twin!(
    bursts,
    bursts_of_100k_messages_from_8_dealers_all_arrive,
    bursts_fail_when_one_message_is_read_per_wakeup: Broken::OneMessagePerWakeup,
    "the broken loop passed the bursts test"
);

// ---------------------------------------------------------------------------------------
// Rule: a drain budget, then yield without waiting on the fd (fairness).

/// The machine is shared (other tests, other builds): a p99 over 50 ms in one 2-second
/// window can come from the OS scheduler alone. So the rule is judged on up to two windows
/// and passes if one of them meets it; the broken loop misses both by 6x (every probe times
/// out), so a broken rule still fails every time.
fn fairness(variant: Broken) -> Outcome {
    let first = with_deadline(Duration::from_secs(60), move || fairness_inner(variant));
    match first {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!("fairness: first window failed ({e}); second window");
            with_deadline(Duration::from_secs(60), move || fairness_inner(variant))
                .map_err(|e2| format!("{e}; then {e2}"))
        }
    }
}

fn fairness_inner(variant: Broken) -> Outcome {
    const FLOOD_FOR: Duration = Duration::from_secs(2);
    const PROBES: usize = 1_000;
    const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
    let rt = current_thread_rt();
    let ctx = zmq::Context::new();
    let client_ctx = zmq::Context::new();
    let stop = Arc::new(AtomicBool::new(false));
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        // The flooded socket: every message costs its handler 20 µs of CPU, so the flood
        // always outruns it and its queue never empties while the flood lasts.
        let (mut flooded, flood_ep) =
            listening(SocketBuilder::new(SocketKind::Router).broken(variant), &ctx)?;
        let flooded_count = flooded.counters();
        let flood_stop = stop.clone();
        tokio::task::spawn_local(async move {
            while flooded.recv().await.is_ok() {
                // Loopback buffers hold a large backlog: stop with the flood, not after it.
                if flood_stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(20) {
                    std::hint::spin_loop();
                }
            }
        });

        // The second socket: an echo server in the same runtime.
        let (mut echo, echo_ep) = listening(SocketBuilder::new(SocketKind::Router), &ctx)?;
        tokio::task::spawn_local(async move {
            while let Ok(m) = echo.recv().await {
                if echo.send(m).await.is_err() {
                    break;
                }
            }
        });

        let mut flooders = Vec::new();
        for _ in 0..2 {
            let (ctx, ep, stop) = (client_ctx.clone(), flood_ep.clone(), stop.clone());
            flooders.push(thread::spawn(move || {
                let s = raw_dealer(&ctx, &ep).unwrap();
                s.set_sndtimeo(50).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.send(&b"flood"[..], 0);
                }
            }));
        }

        // Probes run on a plain thread: blocking libzmq, timed there.
        let (ctx2, stop2) = (client_ctx.clone(), stop.clone());
        let prober = thread::spawn(move || -> Result<Vec<Duration>, String> {
            let s = raw_dealer(&ctx2, &echo_ep).unwrap();
            s.set_rcvtimeo(PROBE_TIMEOUT.as_millis() as i32).unwrap();
            // Let the flood build up first.
            thread::sleep(Duration::from_millis(300));
            let start = Instant::now();
            let mut rtts = Vec::new();
            for i in 0..PROBES as u64 {
                if start.elapsed() > FLOOD_FOR {
                    break;
                }
                let t = Instant::now();
                s.send(&i.to_be_bytes()[..], 0).map_err(text)?;
                loop {
                    match s.recv_bytes(0) {
                        Ok(b) if b == i.to_be_bytes() => {
                            rtts.push(t.elapsed());
                            break;
                        }
                        Ok(_) => continue, // a late answer to an earlier probe
                        Err(zmq::Error::EAGAIN) => {
                            rtts.push(PROBE_TIMEOUT);
                            break;
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
            stop2.store(true, Ordering::Relaxed);
            Ok(rtts)
        });
        // Keep the runtime turning until the prober is done.
        while !prober.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rtts = prober.join().map_err(|_| "prober panicked".to_string())??;
        stop.store(true, Ordering::Relaxed);
        for f in flooders {
            f.join().map_err(|_| "flooder panicked".to_string())?;
        }
        let mut sorted = rtts.clone();
        sorted.sort();
        let p99 = sorted[(sorted.len() * 99).div_ceil(100) - 1];
        let received = flooded_count.received();
        eprintln!(
            "fairness: {} probes, p99 {p99:?}, flooded socket received {received}",
            sorted.len()
        );
        if received < 10_000 {
            return Err(format!(
                "the flood was too weak to test anything: {received} messages"
            ));
        }
        if p99 > Duration::from_millis(50) {
            return Err(format!(
                "p99 of the second socket {p99:?} > 50 ms under flood"
            ));
        }
        if sorted.len() < 20 {
            return Err(format!("only {} probes in {FLOOD_FOR:?}", sorted.len()));
        }
        Ok(())
    })
}

rule_and_broken_twin!(
    fairness,
    a_flooded_socket_does_not_starve_a_second_one,
    fairness_fails_without_a_drain_budget: Broken::NoBudget,
    "the broken loop passed the fairness test"
);

// ---------------------------------------------------------------------------------------
// Rule: re-check ZMQ_EVENTS after every send (replies from worker tasks).

fn replies(variant: Broken) -> Outcome {
    with_deadline(Duration::from_secs(60), move || replies_inner(variant))
}

fn replies_inner(variant: Broken) -> Outcome {
    const CLIENTS: u64 = 4;
    const PER_CLIENT: u64 = 2_500; // 10,000 requests
    const IN_FLIGHT: u64 = 16;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ctx = zmq::Context::new();
    let client_ctx = zmq::Context::new();
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    rt.block_on(async move {
        let (mut server, ep) = watched_router(variant, &ctx)?;
        let counters = server.counters();

        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (ctx, ep, stop, progress) = (
                client_ctx.clone(),
                ep.clone(),
                stop.clone(),
                progress.clone(),
            );
            clients.push(thread::spawn(move || -> Result<(), String> {
                let s = raw_dealer(&ctx, &ep).unwrap();
                s.set_rcvtimeo(100).unwrap();
                let mut answered = vec![false; PER_CLIENT as usize];
                let (mut next, mut done) = (0u64, 0u64);
                while done < PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        return Err(format!("client {c}: stopped at {done}"));
                    }
                    while next < PER_CLIENT && next - done < IN_FLIGHT {
                        s.send(&next.to_be_bytes()[..], 0).map_err(text)?;
                        next += 1;
                    }
                    match s.recv_bytes(0) {
                        Ok(b) => {
                            let id =
                                u64::from_be_bytes(b[..8].try_into().map_err(|_| "short reply")?);
                            let slot =
                                answered.get_mut(id as usize).ok_or("reply to unknown id")?;
                            if std::mem::replace(slot, true) {
                                return Err(format!("client {c}: request {id} answered twice"));
                            }
                            done += 1;
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(zmq::Error::EAGAIN) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            }));
        }

        let replies = server.reply_sender();
        let owner = tokio::spawn(async move {
            loop {
                let req = match server.recv().await {
                    Ok(r) => r,
                    Err(e) => return Err::<(), String>(e.to_string()),
                };
                let replies = replies.clone();
                // Each request is answered by its own worker task after a random delay,
                // so replies go out in random order, from other tasks.
                let delay = rand::thread_rng().gen_range(0..500u64);
                tokio::spawn(async move {
                    if delay < 250 {
                        for _ in 0..delay % 8 {
                            tokio::task::yield_now().await;
                        }
                    } else {
                        tokio::time::sleep(Duration::from_micros(delay * 4)).await;
                    }
                    let _ = replies.send(req);
                });
            }
        });

        let total = CLIENTS * PER_CLIENT;
        let mut last = (0, Instant::now());
        let result = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let p = progress.load(Ordering::Relaxed);
            if p == total {
                break Ok(());
            }
            if counters.missed_wakeups() > 0 {
                break Err(format!(
                    "{} missed wakeups after {p} replies",
                    counters.missed_wakeups()
                ));
            }
            if p != last.0 {
                last = (p, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(5) {
                break Err(format!("stalled: no reply for 5 s after {p} of {total}"));
            }
        };
        stop.store(true, Ordering::Relaxed);
        let mut client_errors = Vec::new();
        for c in clients {
            match c.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => client_errors.push(e),
                Err(_) => client_errors.push("client panicked".into()),
            }
        }
        result?;
        if !client_errors.is_empty() {
            owner.abort();
            return Err(client_errors.join("; "));
        }
        // The owner counts a reply right after libzmq took it; on the multi-thread runtime
        // the client can read the last reply before that count is made.
        let counted = Instant::now();
        while counters.sent() < total && counted.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        owner.abort();
        if counters.sent() != total || counters.dropped_replies() != 0 {
            return Err(format!(
                "sent {} dropped {}",
                counters.sent(),
                counters.dropped_replies()
            ));
        }
        no_missed_wakeups(&counters)
    })
}

/// The correct loop, run once more if its only fault was a single missed wakeup. The safety
/// timer's check reads the descriptor (`poll`) and then `ZMQ_EVENTS` in two calls, so a
/// request that lands between them is counted as a miss though no edge was lost (the loop's
/// re-check serves it at once): seen once in 29 runs with six busy loops beside the test,
/// never twice in a row. A lost edge recurs: the broken twin below fails at its first miss
/// on every run, so a real fault still fails both runs here.
#[test]
fn ten_thousand_replies_from_worker_tasks_all_sent() {
    match replies(Broken::None) {
        Err(e) if e.starts_with("1 missed wakeups") || e == "missed wakeups: 1" => {
            eprintln!("one missed wakeup ({e}); running the test once more");
            replies(Broken::None).unwrap();
        }
        r => r.unwrap(),
    }
}

#[test]
fn replies_fail_without_a_recheck_after_send() {
    assert_caught(
        replies(Broken::NoRecheckAfterSend),
        "the broken loop passed the replies test",
    );
}

// ---------------------------------------------------------------------------------------
// Rule: idle costs no CPU (wait on the fd, clear readiness).

/// CPU time (user + system) of the calling thread, from getrusage(RUSAGE_THREAD).
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; RUSAGE_THREAD is supported on Linux.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the idle scenario, measuring over `window` (5 s for the rule; the broken loop burns
/// a core, which 1 s shows as well without burning it for 5 s beside the other tests).
fn idle(variant: Broken, window: Duration) -> Result<f64, String> {
    with_deadline(Duration::from_secs(30), move || idle_inner(variant, window))
}

fn idle_inner(variant: Broken, idle_for: Duration) -> Result<f64, String> {
    let rt = current_thread_rt();
    let ctx = zmq::Context::new();
    let peer_ctx = zmq::Context::new();
    rt.block_on(async move {
        let build = |kind| SocketBuilder::new(kind).broken(variant).build(&ctx).map_err(text);
        // 16 of our sockets, 4 of each kind, each with a plain libzmq peer.
        let mut receivers = Vec::new();
        let mut publishers = Vec::new();
        let mut peers: Vec<(zmq::Socket, Multipart)> = Vec::new();
        for i in 0..4 {
            let router = build(SocketKind::Router)?;
            router.bind(&format!("ipc://@cloakroom-idle-{}-{i}", unique())).map_err(text)?;
            let p = peer_ctx.socket(zmq::DEALER).map_err(text)?;
            p.connect(&router.last_endpoint().map_err(text)?).map_err(text)?;
            peers.push((p, msg(&[b"wake"])));
            receivers.push(router);

            let dealer = build(SocketKind::Dealer)?;
            dealer.get_ref().set_identity(format!("d{i}").as_bytes()).map_err(text)?;
            let p = peer_ctx.socket(zmq::ROUTER).map_err(text)?;
            p.bind("tcp://127.0.0.1:*").map_err(text)?;
            dealer.connect(&p.get_last_endpoint().map_err(text)?.unwrap()).map_err(text)?;
            peers.push((p, msg(&[format!("d{i}").as_bytes(), b"wake"])));
            receivers.push(dealer);

            let sub = build(SocketKind::Sub)?;
            sub.subscribe(b"").map_err(text)?;
            let p = peer_ctx.socket(zmq::PUB).map_err(text)?;
            p.bind("tcp://127.0.0.1:*").map_err(text)?;
            sub.connect(&p.get_last_endpoint().map_err(text)?.unwrap()).map_err(text)?;
            peers.push((p, msg(&[b"wake"])));
            receivers.push(sub);

            let publisher = build(SocketKind::Pub)?;
            let p = peer_ctx.socket(zmq::SUB).map_err(text)?;
            p.set_subscribe(b"").map_err(text)?;
            p.connect(&on_loopback(&publisher)?).map_err(text)?;
            publishers.push((publisher, p));
        }
        let counters: Vec<_> = receivers.iter().map(|s| s.counters()).collect();
        // Every receiving socket waits in recv, as a daemon's would.
        let mut tasks = Vec::new();
        for mut s in receivers {
            tasks.push(tokio::spawn(async move { while s.recv().await.is_ok() {} }));
        }
        // Wake each of them once through its descriptor while it sleeps, so every
        // descriptor has fired (and been cleared) before the idle period starts.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        while counters.iter().any(|c| c.received() == 0) {
            if t.elapsed() > Duration::from_secs(10) {
                return Err("the peers could not wake every socket".into());
            }
            for (i, (p, m)) in peers.iter().enumerate() {
                if counters[i].received() == 0 {
                    let frames: Vec<&[u8]> = m.iter().map(|f| &f[..]).collect();
                    let _ = p.send_multipart(frames, zmq::DONTWAIT);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (publisher, _) in &mut publishers {
            publisher.send(msg(&[b"news"])).await.map_err(text)?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;

        let before = thread_cpu();
        let t = Instant::now();
        tokio::time::sleep(idle_for).await;
        let used = thread_cpu() - before;
        let share = used.as_secs_f64() / t.elapsed().as_secs_f64();
        for t in tasks {
            t.abort();
        }
        let missed: u64 = counters.iter().map(|c| c.missed_wakeups()).sum();
        let wakeups: Vec<u64> = counters.iter().map(|c| c.fd_wakeups()).collect();
        eprintln!("idle: 16 sockets used {used:?} of CPU in {:?} ({:.3}% of a core); fd wakeups {wakeups:?}", t.elapsed(), share * 100.0);
        if missed != 0 {
            return Err(format!("missed wakeups: {missed}"));
        }
        if variant == Broken::None && wakeups.contains(&0) {
            return Err("a socket never slept on its descriptor".into());
        }
        drop(publishers);
        Ok(share)
    })
}

#[test]
fn an_idle_runtime_with_16_sockets_uses_under_1_percent_of_a_core() {
    let share = idle(Broken::None, Duration::from_secs(5)).unwrap();
    assert!(share < 0.01, "idle CPU {:.3}% of a core", share * 100.0);
}

#[test]
fn idle_fails_when_readiness_is_never_cleared() {
    let r = idle(Broken::NoClear, Duration::from_secs(1));
    eprintln!("broken variant: {r:?}");
    assert!(
        !matches!(r, Ok(share) if share < 0.01),
        "the broken loop passed the idle test: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Hostile peers and refused messages: errors, never a panic or a hang.

/// A ZMTP 3.0 greeting (NULL mechanism, as a client) followed by a READY command.
fn zmtp_hello() -> Vec<u8> {
    let mut g = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3, 0];
    let mut mech = [0u8; 20];
    mech[..4].copy_from_slice(b"NULL");
    g.extend_from_slice(&mech);
    g.push(0); // as-server
    g.extend_from_slice(&[0u8; 31]);
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&6u32.to_be_bytes());
    body.extend_from_slice(b"DEALER");
    g.push(0x04);
    g.push(body.len() as u8);
    g.extend_from_slice(&body);
    g
}

/// Sends one request from a fresh DEALER and expects the echo within 2 s.
async fn echo_works(ctx: &zmq::Context, ep: &str, server: &mut Socket) -> Outcome {
    let mut client = dealer(ctx, ep, None)?;
    match echoed(&mut client, server, b"still alive?", Duration::from_secs(2)).await? {
        None => Err("server did not receive a good request after the hostile peer".into()),
        Some(reply) if &reply[0][..] != b"still alive?" => Err("wrong echo".into()),
        Some(_) => Ok(()),
    }
}

/// A DEALER of ours connected to `ep`, a CURVE client of the server key with `curve`'s
/// keys if given.
fn dealer(
    ctx: &zmq::Context,
    ep: &str,
    curve: Option<(&CurveKeyPair, &[u8; 32])>,
) -> Result<Socket, String> {
    let client = Socket::new(ctx, SocketKind::Dealer).map_err(text)?;
    if let Some((keys, server_public)) = curve {
        client.curve_client(keys, server_public).map_err(text)?;
    }
    client.connect(ep).map_err(text)?;
    Ok(client)
}

/// `client` sends `body`. `Ok(None)` when `server` receives nothing within `window`; else
/// the server must have received `body` and echoes it, and the reply `client` receives
/// within 2 s is returned.
async fn echoed(
    client: &mut Socket,
    server: &mut Socket,
    body: &[u8],
    window: Duration,
) -> Result<Option<Multipart>, String> {
    client.send(msg(&[body])).await.map_err(text)?;
    let req = match tokio::time::timeout(window, server.recv()).await {
        Err(_) => return Ok(None),
        Ok(req) => req.map_err(|e| format!("server recv failed: {e}"))?,
    };
    if &req[1][..] != body {
        return Err(format!("the server received {:?}", &req[1][..]));
    }
    server.send(req).await.map_err(text)?;
    let reply = tokio::time::timeout(Duration::from_secs(2), client.recv())
        .await
        .map_err(|_| "the server received, but its reply did not arrive")?
        .map_err(text)?;
    Ok(Some(reply))
}

#[test]
fn a_peer_that_disconnects_mid_message_is_harmless() {
    on_runtime(Duration::from_secs(30), || async {
        let ctx = zmq::Context::new();
        let (mut server, ep) = listening(SocketBuilder::new(SocketKind::Router), &ctx)?;
        let addr = ep.trim_start_matches("tcp://").to_string();
        let hello = zmtp_hello();
        // 1. Half a greeting, then gone.
        let mut t = TcpStream::connect(&addr).map_err(text)?;
        t.write_all(&hello[..30]).map_err(text)?;
        drop(t);
        // 2. A whole handshake, then a frame that announces 1000 bytes and carries 5.
        let mut t = TcpStream::connect(&addr).map_err(text)?;
        t.write_all(&hello).map_err(text)?;
        t.write_all(&[0x00, 0xE8]).map_err(text)?; // short frame: 232 bytes
        t.write_all(b"hello").map_err(text)?;
        thread::sleep(Duration::from_millis(50));
        drop(t);
        // 3. A libzmq DEALER that sends the first frame of a two-frame message and closes.
        let raw = raw_dealer(&ctx, &ep)?;
        raw.send(&b"first of two"[..], zmq::SNDMORE).map_err(text)?;
        drop(raw);
        // Nothing of these may come out of the server; a good client still gets served.
        match tokio::time::timeout(Duration::from_millis(300), server.recv()).await {
            Err(_) => {}
            Ok(Ok(m)) => return Err(format!("a partial message came out: {} frames", m.len())),
            Ok(Err(e)) => return Err(format!("recv failed: {e}")),
        }
        echo_works(&ctx, &ep, &mut server).await?;
        no_missed_wakeups(&server.counters())
    })
    .unwrap();
}

#[test]
fn a_64_mib_message_is_refused_by_the_configured_limit() {
    on_runtime(Duration::from_secs(30), || async {
        let ctx = zmq::Context::new();
        let (mut server, ep) = listening(
            SocketBuilder::new(SocketKind::Router).max_message_size(1 << 20),
            &ctx,
        )?;
        let big = vec![7u8; 64 << 20];

        // Our own socket refuses to send it.
        let mut ours = SocketBuilder::new(SocketKind::Dealer)
            .max_message_size(1 << 20)
            .build(&ctx)
            .map_err(text)?;
        ours.connect(&ep).map_err(text)?;
        let err = ours
            .send(vec![zmq::Message::from(&big[..])])
            .await
            .unwrap_err();
        if err.kind() != ErrorKind::TooLarge {
            return Err(format!("expected TooLarge, got {err}"));
        }

        // A peer that sends it anyway is dropped by libzmq; the message never arrives.
        let raw_ctx = zmq::Context::new();
        let raw = raw_dealer(&raw_ctx, &ep)?;
        raw.send(&big[..], 0).map_err(text)?;
        match tokio::time::timeout(Duration::from_millis(1500), server.recv()).await {
            Err(_) => {}
            Ok(Ok(m)) => {
                let len: usize = m.iter().map(|f| f.len()).sum();
                return Err(format!("a message of {len} bytes came through the limit"));
            }
            Ok(Err(e)) => return Err(format!("recv failed: {e}")),
        }
        drop(raw);
        echo_works(&ctx, &ep, &mut server).await
    })
    .unwrap();
}

#[test]
fn an_unroutable_router_reply_is_an_error() {
    on_runtime(Duration::from_secs(30), || async {
        let ctx = zmq::Context::new();
        let mut server = Socket::new(&ctx, SocketKind::Router).map_err(text)?;
        server.bind("inproc://unroutable").map_err(text)?;
        let err = server.send(msg(&[b"nobody", b"reply"])).await.unwrap_err();
        if err.kind() != ErrorKind::Unroutable {
            return Err(format!("expected Unroutable, got {err:?}"));
        }
        if std::error::Error::source(&err).is_none() {
            return Err("the libzmq error is not kept as source()".into());
        }
        // Through the reply queue it is counted and dropped, and the socket goes on.
        server
            .reply_sender()
            .send(msg(&[b"nobody", b"reply"]))
            .map_err(text)?;
        let _ = tokio::time::timeout(Duration::from_millis(50), server.recv()).await;
        if server.counters().dropped_replies() != 1 {
            return Err(format!(
                "dropped_replies = {}",
                server.counters().dropped_replies()
            ));
        }
        echo_works(&ctx, "inproc://unroutable", &mut server).await
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// PUB/SUB, multipart.

#[test]
fn pub_sub_multipart_with_topics() {
    on_runtime(Duration::from_secs(30), || async {
        let ctx = zmq::Context::new();
        // PUB drops what a slow subscriber cannot take past the high-water mark: make
        // room for the whole run so a busy machine cannot lose messages here.
        let hwm = |kind| SocketBuilder::new(kind).high_water_mark(100_000);
        let (mut publisher, ep) = listening(hwm(SocketKind::Pub), &ctx)?;
        let mut sub = hwm(SocketKind::Sub).build(&ctx).map_err(text)?;
        sub.connect(&ep).map_err(text)?;
        sub.subscribe(b"revoke").map_err(text)?;
        // Wait until the subscription has reached the publisher.
        loop {
            publisher
                .send(msg(&[b"revoke", b"warmup"]))
                .await
                .map_err(text)?;
            if tokio::time::timeout(Duration::from_millis(20), sub.recv())
                .await
                .is_ok()
            {
                break;
            }
        }
        for i in 0..1000u32 {
            publisher.send(msg(&[b"other", b"x"])).await.map_err(text)?;
            publisher
                .send(msg(&[b"revoke", &i.to_be_bytes(), b"tail"]))
                .await
                .map_err(text)?;
        }
        let mut seen = HashMap::new();
        while seen.len() < 1000 {
            let m = tokio::time::timeout(Duration::from_secs(2), sub.recv())
                .await
                .map_err(|_| format!("stalled after {}", seen.len()))?
                .map_err(text)?;
            if &m[0][..] == b"revoke" && m.len() == 3 {
                *seen.entry(m[1].to_vec()).or_insert(0) += 1;
            } else if &m[1][..] != b"warmup" {
                return Err(format!("unexpected message {:?}", &m[0][..]));
            }
        }
        Ok(())
    })
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// CURVE with an allow-list (ZAP).

#[test]
fn curve_allows_listed_keys_and_refuses_unknown_ones() {
    assert!(
        curve_available(),
        "the linked libzmq has no CURVE (is Debian's libzmq linked?)"
    );
    on_runtime(Duration::from_secs(30), || async {
        let ctx = zmq::Context::new();
        let server_keys = CurveKeyPair::generate().map_err(text)?;
        let allowed = CurveKeyPair::generate().map_err(text)?;
        let unknown = CurveKeyPair::generate().map_err(text)?;
        let zap = ZapHandler::spawn(&ctx, [allowed.public_key()]).map_err(text)?;

        let mut server = Socket::new(&ctx, SocketKind::Router).map_err(text)?;
        server.curve_server(&server_keys, &zap).map_err(text)?;
        let ep = on_loopback(&server)?;
        let server_public = server_keys.public_key();

        // The unknown client first: its request must never reach the server.
        let mut intruder = dealer(&ctx, &ep, Some((&unknown, &server_public)))?;
        intruder.send(msg(&[b"let me in"])).await.map_err(text)?;
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(700), server.recv()).await {
            return Err(format!("the server received from an unknown key: {r:?}"));
        }
        if zap.denied() == 0 {
            return Err("the ZAP handler was never asked about the unknown key".into());
        }

        // The allowed client connects and gets its answer.
        let mut friend = dealer(&ctx, &ep, Some((&allowed, &server_public)))?;
        let Some(reply) =
            echoed(&mut friend, &mut server, b"hello", Duration::from_secs(2)).await?
        else {
            return Err("the allowed client's request did not arrive".into());
        };
        if &reply[0][..] != b"hello" || zap.allowed() == 0 {
            return Err("wrong reply or ZAP never allowed".into());
        }
        // And the intruder still has nothing.
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), intruder.recv()).await {
            return Err(format!("the unknown key got a reply: {r:?}"));
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let ctx = zmq::Context::new();
    let err = Socket::new(&ctx, SocketKind::Dealer).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoRuntime);
}

// ---------------------------------------------------------------------------------------
// Back-pressure: a ROUTER reply to a peer past its high-water mark waits, without spinning.

#[test]
fn a_router_send_to_a_full_peer_waits_without_spinning() {
    on_runtime(Duration::from_secs(60), || async {
        const N: usize = 500;
        const SIZE: usize = 64 << 10; // 500 x 64 KiB: far more than loopback buffers hold
        let ctx = zmq::Context::new();
        let (mut server, ep) = listening(
            SocketBuilder::new(SocketKind::Router).high_water_mark(4),
            &ctx,
        )?;
        let peer_ctx = zmq::Context::new();
        let peer = peer_ctx.socket(zmq::DEALER).map_err(text)?;
        // Before connecting: a high-water mark set later is not applied to the pipe.
        peer.set_rcvhwm(4).map_err(text)?;
        peer.set_linger(0).map_err(text)?;
        peer.connect(&ep).map_err(text)?;
        let id = hello_from(&peer, &mut server).await?[0].to_vec();
        let sender = tokio::spawn(async move {
            for i in 0..N {
                let mut body = vec![0u8; SIZE];
                body[..8].copy_from_slice(&(i as u64).to_be_bytes());
                server
                    .send(vec![zmq::Message::from(&id[..]), body.into()])
                    .await?;
            }
            Ok::<_, cloakroom_zmq::Error>(server)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = thread_cpu();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let share = (thread_cpu() - before).as_secs_f64() / t.elapsed().as_secs_f64();
        if sender.is_finished() {
            return Err("the peer never filled up: the test tests nothing".into());
        }
        if share > 0.05 {
            return Err(format!("blocked send used {:.1}% of a core", share * 100.0));
        }
        // Now the peer reads everything, and every message arrives in order.
        let reader = thread::spawn(move || -> Result<(), String> {
            peer.set_rcvtimeo(5_000).map_err(text)?;
            for i in 0..N as u64 {
                let b = peer
                    .recv_bytes(0)
                    .map_err(|e| format!("message {i}: {e}"))?;
                if b.len() != SIZE || b[..8] != i.to_be_bytes() {
                    return Err(format!("message {i} is wrong"));
                }
            }
            Ok(())
        });
        while !reader.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reader.join().map_err(|_| "reader panicked")??;
        let server = sender.await.map_err(text)?.map_err(text)?;
        no_missed_wakeups(&server.counters())
    })
    .unwrap();
}

#[test]
fn a_runtime_without_io_or_time_is_an_error_not_a_panic() {
    let ctx = zmq::Context::new();
    let no_io = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let no_time = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    for (without, rt) in [("io", no_io), ("time", no_time)] {
        let err = rt.block_on(async { Socket::new(&ctx, SocketKind::Dealer).unwrap_err() });
        assert_eq!(
            err.kind(),
            ErrorKind::NoRuntime,
            "a runtime without {without}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// CURVE fails closed, whatever happens to the ZAP handler (docs/architecture.md, security defaults).

/// What the scenario does to the ZAP handler after `curve_server`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ZapFate {
    /// The handler is a temporary, dropped at the end of the `curve_server` statement.
    DroppedAtOnce,
    /// Its task is aborted (as a crash or a runtime shutdown would) while handles remain.
    TaskAborted,
    /// It is fed malformed ZAP requests through its inproc endpoint first.
    FedGarbage,
}

/// One CURVE client sends a request; `Ok(true)` when the server received it within
/// `window`, `Ok(false)` when it did not.
async fn curve_client_gets_in(
    ctx: &zmq::Context,
    server: &mut Socket,
    ep: &str,
    keys: &CurveKeyPair,
    server_public: &[u8; 32],
    window: Duration,
) -> Result<bool, String> {
    let mut client = dealer(ctx, ep, Some((keys, server_public)))?;
    // In only when the reply reaches the client too: the connection is really open.
    let reply = echoed(&mut client, server, b"let me in", window).await?;
    Ok(reply.is_some_and(|r| &r[0][..] == b"let me in"))
}

/// Talks to the ZAP endpoint directly with malformed requests: every one that carries an
/// address must be answered "400", none "200", and the handler must go on serving.
async fn feed_zap_garbage(ctx: &zmq::Context, allowed_key: &[u8; 32]) -> Outcome {
    let mut zap = dealer(ctx, "inproc://zeromq.zap.01", None)?;
    let curve_request = |version: &[u8], id: &[u8], extra: Option<&[u8]>| {
        let mut m = msg(&[
            b"",
            version,
            id,
            b"cloakroom",
            b"127.0.0.1",
            b"",
            b"CURVE",
            allowed_key,
        ]);
        if let Some(x) = extra {
            m.push(zmq::Message::from(x));
        }
        m
    };
    let mut junk = vec![0u8; 4096];
    rand::thread_rng().fill(&mut junk[..]);
    let garbage: Vec<Multipart> = vec![
        msg(&[b"garbage"]), // no address: dropped
        msg(&[b""]),        // no address: dropped
        msg(&[b"x", b"1.0", b"g-0", b"d", b"a", b"", b"CURVE", allowed_key]), // no delimiter
        msg(&[
            &junk[..],
            &junk[..7],
            &junk[9..],
            b"",
            b"",
            b"",
            b"",
            b"",
            b"",
        ]),
        msg(&[b"", b"1.0", b"g-1"]),                   // too short: 400
        curve_request(b"9.9", b"g-2", None),           // wrong version, allowed key: 400
        curve_request(b"1.0", b"g-3", Some(b"extra")), // extra frame, allowed key: 400
        msg(&[
            b"",
            b"1.0",
            b"g-4",
            b"cloakroom",
            b"127.0.0.1",
            b"",
            b"PLAIN",
            b"u",
            b"p",
        ]),
    ];
    for m in garbage {
        zap.send(m).await.map_err(text)?;
    }
    let mut answered = Vec::new();
    for _ in 0..4 {
        let reply = tokio::time::timeout(Duration::from_secs(2), zap.recv())
            .await
            .map_err(|_| format!("malformed ZAP requests answered: {answered:?} of 4"))?
            .map_err(text)?;
        if reply.len() < 4 || &reply[1][..] != b"1.0" {
            return Err(format!("a ZAP reply of {} frames", reply.len()));
        }
        if &reply[3][..] != b"400" {
            return Err(format!(
                "a malformed ZAP request got status {:?}",
                String::from_utf8_lossy(&reply[3][..])
            ));
        }
        answered.push(String::from_utf8_lossy(&reply[2][..]).into_owned());
    }
    answered.sort();
    if answered != ["g-1", "g-2", "g-3", "g-4"] {
        return Err(format!("answered {answered:?}"));
    }
    if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), zap.recv()).await {
        return Err(format!("an unaddressed ZAP request was answered: {r:?}"));
    }
    Ok(())
}

fn curve_fails_closed(variant: Broken, fate: ZapFate) -> Outcome {
    assert!(
        curve_available(),
        "the linked libzmq has no CURVE (is Debian's libzmq linked?)"
    );
    on_runtime(Duration::from_secs(60), move || async move {
        let ctx = zmq::Context::new();
        let server_keys = CurveKeyPair::generate().map_err(text)?;
        let allowed = CurveKeyPair::generate().map_err(text)?;
        let unknown = CurveKeyPair::generate().map_err(text)?;
        let mut server = SocketBuilder::new(SocketKind::Router)
            .broken(variant)
            .build(&ctx)
            .map_err(text)?;
        let zap = if fate == ZapFate::DroppedAtOnce {
            // The handler is a temporary: gone at the end of this statement.
            server
                .curve_server(
                    &server_keys,
                    &ZapHandler::spawn(&ctx, [allowed.public_key()]).map_err(text)?,
                )
                .map_err(text)?;
            None
        } else {
            let zap = ZapHandler::spawn(&ctx, [allowed.public_key()]).map_err(text)?;
            server.curve_server(&server_keys, &zap).map_err(text)?;
            Some(zap)
        };
        let ep = on_loopback(&server)?;
        let server_public = server_keys.public_key();
        if let (ZapFate::TaskAborted, Some(zap)) = (fate, &zap) {
            zap.abort_task();
        }
        // Let the runtime drop a stopped task (and libzmq close its socket).
        tokio::time::sleep(Duration::from_millis(100)).await;
        if fate == ZapFate::FedGarbage {
            feed_zap_garbage(&ctx, &allowed.public_key()).await?;
        }

        // The unknown key is refused, every time.
        for attempt in 0..3 {
            let window = Duration::from_millis(500);
            if curve_client_gets_in(&ctx, &mut server, &ep, &unknown, &server_public, window)
                .await?
            {
                return Err(format!("attempt {attempt}: an unknown key got in"));
            }
        }
        let window = Duration::from_secs(2);
        let friend_in =
            curve_client_gets_in(&ctx, &mut server, &ep, &allowed, &server_public, window).await?;
        match fate {
            // No handler runs: nobody gets in, the allowed key neither (fails closed).
            ZapFate::TaskAborted if friend_in => {
                return Err("with the handler's task aborted, a client got in".into())
            }
            ZapFate::TaskAborted => {}
            // The handler lives on: the allowed key gets in.
            _ if !friend_in => return Err("the allowed key was refused".into()),
            _ => {}
        }
        if let Some(zap) = &zap {
            if fate == ZapFate::FedGarbage && (zap.malformed() != 6 || zap.allowed() != 1) {
                return Err(format!("ZAP counters after garbage: {zap:?}"));
            }
        }
        no_missed_wakeups(&server.counters())
    })
}

rule_and_broken_twin!(
    |variant| curve_fails_closed(variant, ZapFate::DroppedAtOnce),
    curve_refuses_unknown_keys_after_the_zap_handler_value_is_dropped,
    curve_fails_open_when_the_socket_only_borrows_its_zap_handler: Broken::CurveFailsOpen,
    "the fail-open CURVE server passed the dropped-handler test"
);

rule_and_broken_twin!(
    |variant| curve_fails_closed(variant, ZapFate::TaskAborted),
    curve_refuses_every_key_after_the_zap_task_is_aborted,
    curve_fails_open_without_zap_enforce_domain_when_the_task_dies: Broken::CurveFailsOpen,
    "the fail-open CURVE server passed the aborted-task test"
);

#[test]
fn curve_zap_handler_denies_garbage_and_serves_on() {
    curve_fails_closed(Broken::None, ZapFate::FedGarbage).unwrap();
}

// ---------------------------------------------------------------------------------------
// One slow peer never delays the others' replies; the reply queues stay bounded.

/// `peers` DEALERs each send `per_peer` requests and never read a reply; then a second
/// client's 200 requests, one at a time, must each be answered promptly.
fn slow_peer(variant: Broken, peers: u64, per_peer: u64) -> Outcome {
    with_deadline(Duration::from_secs(120), move || {
        slow_peer_inner(variant, peers, per_peer)
    })
}

fn slow_peer_inner(variant: Broken, peers: u64, per_peer: u64) -> Outcome {
    const PROBES: usize = 200;
    const PAD: usize = 1024; // each reply carries 1 KiB, so the slow peer fills up for sure
    let rt = current_thread_rt();
    let ctx = zmq::Context::new();
    let client_ctx = zmq::Context::new();
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async move {
        let flood = peers * per_peer;
        let mut builder = SocketBuilder::new(SocketKind::Router).broken(variant);
        if peers > 1 {
            // Many peers, fewer requests each: small pipes and socket buffers so that every
            // one of them fills up.
            builder = builder.high_water_mark(50);
        }
        let mut server = builder.build(&ctx).map_err(text)?;
        if peers > 1 {
            server.get_ref().set_sndbuf(16 << 10).map_err(text)?;
        }
        let ep = on_loopback(&server)?;
        let counters = server.counters();
        let replies = server.reply_sender();
        let owner = tokio::spawn(async move {
            let pad = vec![0u8; PAD];
            loop {
                let req = match server.recv().await {
                    Ok(r) => r,
                    Err(err) => return Err::<(), String>(err.to_string()),
                };
                let reply = vec![
                    zmq::Message::from(&req[0][..]),
                    zmq::Message::from(&req[1][..]),
                    zmq::Message::from(&pad[..]),
                ];
                // A full reply queue is refused and counted (Counters::refused_replies).
                let _ = replies.send(reply);
            }
        });
        // Sample the held-replies gauge all along.
        let max_held = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (counters, max_held) = (counters.clone(), max_held.clone());
            tokio::spawn(async move {
                loop {
                    max_held.fetch_max(counters.held_replies(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };

        // The slow peers (one thread): send their requests and never read a reply.
        let slow = {
            let (ctx, ep, stop) = (client_ctx.clone(), ep.clone(), stop.clone());
            thread::spawn(move || -> Result<(), String> {
                let mut socks = Vec::new();
                for _ in 0..peers {
                    let s = ctx.socket(zmq::DEALER).map_err(text)?;
                    s.set_linger(0).map_err(text)?;
                    s.set_rcvhwm(10).map_err(text)?;
                    if peers > 1 {
                        s.set_rcvbuf(16 << 10).map_err(text)?;
                    }
                    s.set_sndtimeo(20_000).map_err(text)?;
                    s.connect(&ep).map_err(text)?;
                    socks.push(s);
                }
                for i in 0..per_peer {
                    for s in &socks {
                        s.send(&i.to_be_bytes()[..], 0)
                            .map_err(|e| format!("slow peer, request {i}: {e}"))?;
                    }
                }
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            })
        };
        // Wait until it is really stuck: the server holds or sheds replies for it.
        let t = Instant::now();
        while counters.held_replies() == 0 && counters.shed_replies() == 0 {
            if t.elapsed() > Duration::from_secs(30) {
                stop.store(true, Ordering::Relaxed);
                return Err("the slow peer never filled up: the test tests nothing".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // A second client: one request at a time, each answered promptly.
        let probe = {
            let (ctx, ep) = (client_ctx.clone(), ep.clone());
            thread::spawn(move || -> Result<Vec<Duration>, String> {
                let s = raw_dealer(&ctx, &ep)?;
                s.set_rcvtimeo(2_000).map_err(text)?;
                let mut took = Vec::with_capacity(PROBES);
                for i in 0..PROBES as u64 {
                    let t = Instant::now();
                    s.send(&i.to_be_bytes()[..], 0).map_err(text)?;
                    let reply = s
                        .recv_multipart(0)
                        .map_err(|e| format!("probe {i}: no reply within 2 s ({e})"))?;
                    if reply.first().map(|b| &b[..]) != Some(&i.to_be_bytes()[..]) {
                        return Err(format!("probe {i}: wrong reply"));
                    }
                    took.push(t.elapsed());
                }
                Ok(took)
            })
        };
        while !probe.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let probed = probe.join().map_err(|_| "probe panicked")?;
        // Let the flood finish too, so the bound is checked at its worst.
        let t = Instant::now();
        while probed.is_ok()
            && counters.received() < flood + PROBES as u64
            && t.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let slow_result = slow.join().map_err(|_| "slow peer panicked")?;
        owner.abort();
        sampler.abort();
        let mut took = probed?;
        slow_result?;
        took.sort();
        let (p50, max) = (took[took.len() / 2], took[took.len() - 1]);
        let max_held = max_held.load(Ordering::Relaxed);
        eprintln!(
            "probe replies: p50 {p50:?}, p99 {:?}, max {max:?}; held at most {max_held}, \
             shed {}, refused {}, received {}",
            took[took.len() * 99 / 100],
            counters.shed_replies(),
            counters.refused_replies(),
            counters.received()
        );
        if max > Duration::from_secs(1) || p50 > Duration::from_millis(50) {
            return Err(format!("probe replies too slow: p50 {p50:?}, max {max:?}"));
        }
        let bound = (peers * cloakroom_zmq::DEFAULT_HELD_PER_PEER as u64)
            .min(cloakroom_zmq::DEFAULT_HELD_TOTAL as u64);
        if max_held > bound {
            return Err(format!("held replies grew to {max_held} (bound {bound})"));
        }
        if counters.shed_replies() == 0 {
            return Err("nothing was shed: the slow peer was never past its bound".into());
        }
        no_missed_wakeups(&counters)
    })
}

rule_and_broken_twin!(
    |variant| slow_peer(variant, 1, 100_000),
    a_peer_that_never_reads_does_not_delay_the_others_replies,
    replies_stall_behind_a_slow_peer_with_one_queue_for_all: Broken::OldReplyQueue,
    "the old reply queue passed the slow-peer test"
);

#[test]
fn a_hundred_peers_that_never_read_do_not_delay_the_others_replies() {
    slow_peer(Broken::None, 100, 1_000).unwrap();
}

// ---------------------------------------------------------------------------------------
// Sending replies spends the drain budget: a big writer yields to the runtime too.

fn big_writer(variant: Broken) -> Outcome {
    on_runtime(Duration::from_secs(60), move || async move {
        const REPLIES: u64 = 10_000;
        let ctx = zmq::Context::new();
        let (mut server, ep) = listening(
            SocketBuilder::new(SocketKind::Router)
                .reply_queue(REPLIES as usize)
                // The reader may fall behind for a moment: hold, never shed, here.
                .held_replies(REPLIES as usize, REPLIES as usize)
                .broken(variant),
            &ctx,
        )?;
        let peer_ctx = zmq::Context::new();
        let peer = raw_dealer(&peer_ctx, &ep)?;
        let hello = hello_from(&peer, &mut server).await?;
        let reader = thread::spawn(move || -> Result<(), String> {
            peer.set_rcvtimeo(5_000).map_err(text)?;
            for i in 0..REPLIES {
                peer.recv_bytes(0).map_err(|e| format!("reply {i}: {e}"))?;
            }
            Ok(())
        });
        let replies = server.reply_sender();
        for i in 0..REPLIES {
            replies
                .send(vec![
                    zmq::Message::from(&hello[0][..]),
                    zmq::Message::from(&i.to_be_bytes()[..]),
                ])
                .map_err(text)?;
        }
        let counters = server.counters();
        let yields_before = counters.budget_yields();
        let t = Instant::now();
        while counters.sent() < REPLIES {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "only {} replies sent (held {}, shed {}, dropped {})",
                    counters.sent(),
                    counters.held_replies(),
                    counters.shed_replies(),
                    counters.dropped_replies()
                ));
            }
            let _ = tokio::time::timeout(Duration::from_millis(10), server.recv()).await;
        }
        reader.join().map_err(|_| "reader panicked")??;
        if counters.shed_replies() + counters.dropped_replies() != 0 {
            return Err("replies were lost".into());
        }
        let yields = counters.budget_yields() - yields_before;
        // 10,000 replies at 64 per budget: about 156 yields. Allow for the budget being
        // refilled whenever the task really waits.
        if yields < REPLIES / 64 / 2 {
            return Err(format!("{REPLIES} replies sent with {yields} yields"));
        }
        Ok(())
    })
}

rule_and_broken_twin!(
    big_writer,
    sending_ten_thousand_queued_replies_yields_to_the_runtime,
    a_big_writer_never_yields_when_replies_spend_no_budget: Broken::OldReplyQueue,
    "the old reply queue passed the big-writer test"
);
