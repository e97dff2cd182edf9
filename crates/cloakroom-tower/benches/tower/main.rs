//! One axum app, two builds of it: on Cloakroom's `SessionLayer` and on tower-sessions 0.15's
//! `SessionManagerLayer`, each on its own store at that store's defaults (memory, SQLite,
//! Redis). Routes: `GET /read` reads a counter from the session, `POST /write` adds one to it.
//! `wrk` drives both the same way (one thread, loopback), in alternating rounds; the table
//! gives the ratio Cloakroom ÷ tower-sessions of 2xx answers per second, the p99 latency of
//! each side and the answers that were not 2xx (or got none) on each side.
//!
//! ```text
//! cargo bench -p cloakroom-tower --bench tower     # 3 alternating rounds of 3 s per side and cell
//! BENCH_QUICK=1 cargo bench -p cloakroom-tower --bench tower         # 1 round of 1 s: about 90 s
//! BENCH_SECS=5 BENCH_ROUNDS=5 cargo bench -p cloakroom-tower --bench tower
//! BENCH_BACKENDS=sqlite,sqlite-normal BENCH_CONNS=16,64 cargo bench -p cloakroom-tower --bench tower
//! ```
//!
//! Backends (`BENCH_BACKENDS`, default `memory,sqlite,sqlite-cached,redis,redis-cached`):
//! `memory`; `sqlite` (Cloakroom's
//! `SqliteStore::open`, against tower-sessions-sqlx-store on `SqlitePool::connect` of its own
//! file: sqlx's defaults, a rollback journal with `synchronous = FULL`); `sqlite-normal` (the
//! same, with tower-sessions' file in WAL mode with `synchronous = NORMAL`, Cloakroom's
//! default, for a comparison at equal durability); `redis` (Cloakroom's `RedisStore` against
//! tower-sessions-redis-store on a fred pool of 6 connections, as its README sets it up), on
//! `$CLOAKROOM_TEST_REDIS` (default redis://127.0.0.1:6379) under key prefixes of the
//! benchmark's own. `sqlite-cached`, `sqlite-normal-cached` and `redis-cached` are the same
//! comparisons with Cloakroom's store behind its session cache (`CachedStore::sqlite` /
//! `CachedStore::redis` of `DEFAULT_CAPACITY` records, what `cloakroom_stores::open_cached`
//! builds); their rows also print the cache's hits, store reads and invalidations per request.
//!
//! Workloads: GET for 256 users (each request carries the next of 256 session cookies), GET
//! for one user (every request the same cookie), POST for 256 users, POST for one user (all
//! connections write one session at once). Connections: `BENCH_CONNS`, default 1,16,64.
//! `wrk` is a Debian package (`apt-get install wrk`; scripts/setup.d/70-wrk.sh).
//!
//! `BENCH_ONLY=cloakroom` (or `tower-sessions`) drives one side only, one run per cell, for
//! a profiler attached to the benchmark process (`perf record -p`); with it,
//! `BENCH_WORKLOADS` picks workloads (`get-many,get-one,post-many,post-one`).
//!
//! `BENCH_COUNT=1` also counts the Cloakroom side's store calls and prints them per request
//! under each row (a wrapper store; leave it off for the ratios).

mod apps;
mod backends;
mod core14;
mod counted;
// The store wrapper and the server the tests use too.
#[path = "../../tests/support/hooked.rs"]
mod hooked;
#[path = "../../tests/support/server.rs"]
mod server;
mod table;
mod wrk;

use std::fmt::Write as _;
use std::sync::Arc;

use backends::backend;
use counted::{CALLS, CALL_NAMES};
use table::{ms, summarise, Cell, WorkloadCells};
use wrk::{wrk, Workload};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not valid")),
        Err(_) => default,
    }
}

/// CPU seconds this process (the servers, not wrk) has used, from /proc/self/stat.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which ends with ')'): utime and stime are the 12th
    // and 13th, in clock ticks (100 a second on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only
    // when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0");
    let secs: u64 = env_or("BENCH_SECS", if quick { 1 } else { 3 });
    let rounds: usize = env_or("BENCH_ROUNDS", if quick { 1 } else { 3 });
    let conns: Vec<usize> = env_or::<String>("BENCH_CONNS", "1,16,64".into())
        .split(',')
        .map(|c| c.trim().parse().expect("BENCH_CONNS: numbers"))
        .collect();
    let backends: Vec<String> = env_or::<String>(
        "BENCH_BACKENDS",
        "memory,sqlite,sqlite-cached,redis,redis-cached".into(),
    )
    .split(',')
    .map(|b| b.trim().to_owned())
    .collect();
    assert!(
        secs > 0 && rounds > 0,
        "BENCH_SECS and BENCH_ROUNDS must be positive"
    );
    if std::env::var_os("BENCH_COUNT").is_some_and(|v| v != "0") {
        CALLS.set(Arc::default()).unwrap();
    }
    let redis_url =
        std::env::var("CLOAKROOM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let dir = tempfile::tempdir().unwrap();
    println!(
        "wrk -t1, {rounds} alternating round(s) of {secs} s per side and cell; medians; failed = not 2xx or no answer, summed over the rounds"
    );

    let workloads = env_or::<String>(
        "BENCH_WORKLOADS",
        "get-many,get-one,post-many,post-one".into(),
    );
    let workloads: Vec<&str> = workloads.split(',').map(str::trim).collect();
    // For a profiler: one side only, one run per cell, no comparison.
    let only = std::env::var("BENCH_ONLY").ok();
    if let Some(side) = &only {
        assert!(
            side == "cloakroom" || side == "tower-sessions",
            "BENCH_ONLY is cloakroom or tower-sessions"
        );
    }
    let mut summary: Vec<(String, Vec<WorkloadCells>)> = Vec::new();
    for name in &backends {
        let (label, ours, theirs) = backend(name, dir.path(), &redis_url).await;
        // Warm both sides up (connections, caches, the SQLite files) before the first round.
        for side in [&ours, &theirs] {
            for w in [Workload::GetMany, Workload::PostMany] {
                wrk(side.addr, side.script(w), 16, 1).await;
            }
        }
        if let Some(side) = &only {
            let side = if side == "cloakroom" { &ours } else { &theirs };
            for w in Workload::ALL {
                if !workloads.contains(&w.short()) {
                    continue;
                }
                for &c in &conns {
                    let cpu = process_cpu();
                    let run = wrk(side.addr, side.script(w), c, secs).await;
                    let cpu = process_cpu() - cpu;
                    println!(
                        "{label}, {}, {c} conns, {only:?} only: {:.0} 2xx/s, p99 {}, {} failed, server CPU {:.1} us per request",
                        w.label(),
                        run.ok_rps,
                        ms(run.p99),
                        run.failed,
                        cpu * 1e6 / run.requests as f64
                    );
                }
            }
            continue;
        }
        println!();
        println!("### {label}");
        println!();
        println!("| workload | conns | Cloakroom 2xx/s | tower-sessions 2xx/s | ratio | Cloakroom p99 | tower-sessions p99 | Cloakroom failed | tower-sessions failed |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut per_workload = Vec::new();
        for w in Workload::ALL {
            let mut cells = Vec::new();
            for &c in &conns {
                // Alternating rounds (A B, B A, A B, ...), the median of each: the machine
                // is shared, and a burst of someone else's work must not land on one side
                // only.
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let calls_before = CALLS.get().map(|c| c.snapshot());
                let cache_before = ours.cache.as_ref().map(|probe| probe());
                for round in 0..rounds {
                    if round % 2 == 0 {
                        a.push(wrk(ours.addr, ours.script(w), c, secs).await);
                        b.push(wrk(theirs.addr, theirs.script(w), c, secs).await);
                    } else {
                        b.push(wrk(theirs.addr, theirs.script(w), c, secs).await);
                        a.push(wrk(ours.addr, ours.script(w), c, secs).await);
                    }
                }
                let cell = Cell {
                    ours: summarise(&a),
                    theirs: summarise(&b),
                };
                println!(
                    "| {} | {c} | {:.0} | {:.0} | {:.2}x | {} | {} | {} | {} |",
                    w.label(),
                    cell.ours.ok_rps,
                    cell.theirs.ok_rps,
                    cell.ratio(),
                    ms(cell.ours.p99),
                    ms(cell.theirs.p99),
                    cell.ours.failed,
                    cell.theirs.failed,
                );
                if let (Some(before), Some(calls)) = (calls_before, CALLS.get()) {
                    let after = calls.snapshot();
                    let per_request: Vec<String> = CALL_NAMES
                        .iter()
                        .zip(before.iter().zip(after))
                        .filter(|(_, (b, a))| a > b)
                        .map(|(name, (b, a))| {
                            format!("{name} {:.2}", (a - b) as f64 / cell.ours.requests as f64)
                        })
                        .collect();
                    println!(
                        "|   Cloakroom store calls per request: {} | | | | | | | | |",
                        per_request.join(", ")
                    );
                }
                if let (Some(before), Some(probe)) = (cache_before, &ours.cache) {
                    let after = probe();
                    let per = |a: u64, b: u64| (a - b) as f64 / cell.ours.requests as f64;
                    println!(
                        "|   Cloakroom session cache per request: {:.2} hits, {:.2} store reads ({:.2} misses, {:.2} bypassed), {:.2} invalidations | | | | | | | | |",
                        per(after.hits, before.hits),
                        per(after.misses + after.bypassed, before.misses + before.bypassed),
                        per(after.misses, before.misses),
                        per(after.bypassed, before.bypassed),
                        per(after.invalidations, before.invalidations),
                    );
                }
                cells.push((c, cell));
            }
            per_workload.push((w, cells));
        }
        summary.push((label, per_workload));
    }

    // The issue's table: one row per workload, one column per backend, the ratios at each
    // connection count.
    println!();
    println!(
        "### Ratio Cloakroom ÷ tower-sessions (2xx/s) at {} connections",
        conns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!();
    let mut header = String::from("| workload |");
    let mut rule = String::from("|---|");
    for (label, _) in &summary {
        write!(header, " {label} |").unwrap();
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for (i, w) in Workload::ALL.iter().enumerate() {
        let mut row = format!("| {} |", w.label());
        for (_, per_workload) in &summary {
            let cells = &per_workload[i].1;
            let ratios: Vec<String> = cells
                .iter()
                .map(|(_, cell)| format!("{:.2}", cell.ratio()))
                .collect();
            write!(row, " {} |", ratios.join(" / ")).unwrap();
        }
        println!("{row}");
    }
}
