//! Opening the store a command names (`--store URL`, `CLOAKROOM_STORE`), and the clock.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use cloakroom::Store;
use cloakroom_stores::StoreUrl;

/// Opens the store at `url` for an operator command. A SQLite file or file-store directory
/// that does not exist is an error (an operator command never creates an empty store by
/// mistake); every failure is one line naming the store (never its password).
pub(crate) async fn open_existing(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let target = StoreUrl::parse(url).map_err(|e| anyhow!("--store: {e}"))?;
    match &target {
        StoreUrl::Sqlite(path) | StoreUrl::File(path) if !path.exists() => bail!(
            "no store at {target:?}: {} does not exist (pass --store URL or set CLOAKROOM_STORE; \
             the default is the daemon's ./cloakroom-data/sessions.db)",
            path.display()
        ),
        _ => {}
    }
    open_url(target).await
}

/// Opens (creating a SQLite file or directory if needed) the store `target`.
pub(crate) async fn open_url(target: StoreUrl) -> anyhow::Result<Arc<dyn Store>> {
    target
        .open()
        .await
        .map_err(|e| anyhow!("cannot open the store {target:?}: {}", one_line(&e)))
}

/// An error and its sources on one line.
pub(crate) fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !out.contains(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

/// A store or session error as a one-line `anyhow` error saying what failed.
pub(crate) fn failed<E: std::error::Error + 'static>(
    what: &str,
) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow!("{what}: {}", one_line(&e))
}

/// Unix seconds now.
pub(crate) fn now() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| anyhow!("the system clock is before 1970"))?
        .as_secs())
}

/// A runtime for one command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the async runtime: {e}"))
}
