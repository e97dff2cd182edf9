//! Anonymous-rate creates against memcached, to show that a create's cost does not grow with
//! the number of sessions created before it (issue 15): prints the create rate of the first
//! and the last 10% of the run, and their ratio.
//!
//! ```text
//! memcached -u root -l 127.0.0.1 -p 11311 -U 0 -m 2048 &
//! cargo run -p cloakroom-stores --features memcached --example memcached_creates -- 127.0.0.1:11311 1000000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cloakroom::{Policy, Record, SessionId, Store};
use cloakroom_stores::MemcachedStore;

const TASKS: u64 = 32;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:11211".into());
    let total: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let store = MemcachedStore::builder(addr.as_str())
        .with_prefix("bench-creates:")
        // A busy shared machine: a stall is not what this measures.
        .with_command_timeout(std::time::Duration::from_secs(10))
        .with_connect_timeout(std::time::Duration::from_secs(10))
        .with_pool_size(TASKS as usize)
        .connect()
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let tenth = (total / 10).max(1);
    // The time at which each tenth of the creates was reached.
    let marks = Arc::new(std::sync::Mutex::new(vec![None; 11]));
    let start = Instant::now();
    marks.lock().map_err(|_| "poisoned")?[0] = Some(start);
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, done, marks) = (store.clone(), done.clone(), marks.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n > total {
                    return Ok::<(), cloakroom::Error>(());
                }
                let r = Record::new(
                    SessionId::generate()?.hash(),
                    1_700_000_000,
                    &Policy::default(),
                );
                store.create(&r, r.last_seen).await?;
                if n % tenth == 0 {
                    let i = usize::try_from(n / tenth).unwrap_or(10).min(10);
                    if let Ok(mut m) = marks.lock() {
                        m[i] = Some(Instant::now());
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let m = marks.lock().map_err(|_| "poisoned")?.clone();
    let rate = |a: usize, b: usize| -> Option<f64> {
        let secs = m[b]?.duration_since(m[a]?).as_secs_f64();
        Some(tenth as f64 / secs)
    };
    let (first, last) = (rate(0, 1), rate(9, 10));
    println!(
        "{total} creates in {:.1} s ({:.0}/s), {TASKS} tasks",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    if let (Some(first), Some(last)) = (first, last) {
        println!(
            "first 10%: {first:.0} creates/s; last 10%: {last:.0} creates/s; last/first = {:.2}",
            last / first
        );
    }
    Ok(())
}
