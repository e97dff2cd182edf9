//! `dev fill` (hidden): many sessions, fast, for tests and benchmarks.

use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use cloakroom::{Device, Policy, Record, SessionId, Store};
use cloakroom_stores::StoreUrl;

use crate::cli::DevCommand;
use crate::store::{failed, now, open_url, runtime};
use crate::Failure;

/// Records are written this many at a time (one SQLite transaction each).
const CHUNK: usize = 50_000;

fn record(
    now: u64,
    user: Option<&str>,
    label: Option<&str>,
    expired: bool,
) -> anyhow::Result<Record> {
    let id = SessionId::generate().map_err(|e| anyhow!("{e}"))?;
    let born = if expired { now - 7 * 3600 } else { now };
    let mut r = Record::new(id.hash(), born, &Policy::default());
    if expired {
        // Idle for an hour: expired an hour ago.
        r.last_seen = born;
        r.idle_deadline = now - 3600;
    }
    r.user_id = user.map(str::to_owned);
    let mut device = Device::new().with_user_agent("cloakroom dev fill");
    if let Some(label) = label {
        device = device.with_label(label);
    }
    r.device = device;
    Ok(r)
}

pub(crate) fn dev(command: DevCommand) -> Result<(), Failure> {
    let DevCommand::Fill {
        count,
        user,
        expired,
        label,
        store,
    } = command;
    let rt = runtime()?;
    rt.block_on(async {
        let target = StoreUrl::parse(&store.url).map_err(|e| anyhow!("--store: {e}"))?;
        let started = Instant::now();
        let now = now()?;
        let make = || record(now, user.as_deref(), label.as_deref(), expired);
        if let StoreUrl::Sqlite(path) = &target {
            let s = cloakroom_stores::SqliteStore::open(path.clone())
                .await
                .map_err(failed("opening the SQLite store"))?;
            let mut left = count;
            while left > 0 {
                let n = left.min(CHUNK as u64);
                let batch = (0..n).map(|_| make()).collect::<anyhow::Result<Vec<_>>>()?;
                s.create_many(batch).await.map_err(failed("filling"))?;
                left -= n;
            }
        } else {
            let s: Arc<dyn Store> = open_url(target).await?;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..count {
                let r = make()?;
                let s = Arc::clone(&s);
                tasks.spawn(async move { s.create(&r, r.last_seen).await });
                if tasks.len() >= 64 {
                    if let Some(done) = tasks.join_next().await {
                        done.map_err(|e| anyhow!("{e}"))?
                            .map_err(failed("filling"))?;
                    }
                }
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| anyhow!("{e}"))?
                    .map_err(failed("filling"))?;
            }
        }
        eprintln!(
            "created {count} {}sessions in {:.2} s",
            if expired { "expired " } else { "" },
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}
