//! The background purger: a tokio task that deletes expired records every interval, so a
//! store does not grow without bound when no one runs `cloakroom purge`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind};
use crate::policy::Clock;
use crate::store::Store;

/// How often the purger runs by default: every 5 minutes.
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How many records one purge statement deletes at most by default.
pub const DEFAULT_PURGE_BATCH: usize = 1000;
/// The first wait after a failed round, by default; it doubles with every further failure.
pub const DEFAULT_PURGE_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts while the store is down, by default.
pub const DEFAULT_PURGE_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// At most this many batches in one round: a store that keeps answering a full batch (a bug,
/// or a purge that cannot keep up) still lets the round end and the next interval begin.
const MAX_BATCHES_PER_ROUND: usize = 10_000;

/// When and how much the background purger deletes.
///
/// ```
/// use std::time::Duration;
/// use cloakroom::PurgeConfig;
///
/// let config = PurgeConfig::new(Duration::from_secs(60), 500)?
///     .with_backoff(Duration::from_millis(500), Duration::from_secs(30))?;
/// assert_eq!(config.batch(), 500);
/// assert!(PurgeConfig::new(Duration::ZERO, 500).is_err());
/// # Ok::<(), cloakroom::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeConfig {
    interval: Duration,
    batch: usize,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl Default for PurgeConfig {
    /// Every 5 minutes, 1000 records per statement; while the store is down, attempts 1 s,
    /// 2 s, 4 s, ... apart, at most 60 s.
    fn default() -> Self {
        Self {
            interval: DEFAULT_PURGE_INTERVAL,
            batch: DEFAULT_PURGE_BATCH,
            first_backoff: DEFAULT_PURGE_FIRST_BACKOFF,
            max_backoff: DEFAULT_PURGE_MAX_BACKOFF,
        }
    }
}

impl PurgeConfig {
    /// A round every `interval`, deleting at most `batch` records per store call and calling
    /// again until a call deletes fewer.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if `interval` is zero or `batch` is 0.
    pub fn new(interval: Duration, batch: usize) -> Result<Self, Error> {
        if interval.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the purge interval must be above zero",
            ));
        }
        if batch == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the purge batch must be at least 1 record",
            ));
        }
        Ok(Self {
            interval,
            batch,
            ..Self::default()
        })
    }

    /// The waits between attempts while the store is down: `first` after the first failure,
    /// doubling per failure up to `max` (defaults 1 s and 60 s). A wait never exceeds the
    /// interval.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if `first` is zero or above `max`.
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> Result<Self, Error> {
        if first.is_zero() || first > max {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the purge back-off must start above zero and at most at its limit",
            ));
        }
        self.first_backoff = first;
        self.max_backoff = max;
        Ok(self)
    }

    /// The time between two rounds.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The most records one store call deletes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The first and the longest wait between two attempts while the store is down.
    pub fn backoff_limits(&self) -> (Duration, Duration) {
        (self.first_backoff, self.max_backoff)
    }

    /// The wait after the `failures`-th failure in a row (1-based): first, twice that, four
    /// times, ... up to the back-off limit and never past the interval.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        let doubled = self.first_backoff.saturating_mul(factor);
        doubled.min(self.max_backoff).min(self.interval)
    }
}

/// What the purger has done so far, for a health page or a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PurgeStats {
    /// Rounds that finished (every batch of the round succeeded).
    pub rounds: u64,
    /// Rounds that failed (the store was down, or a store call panicked).
    pub failures: u64,
    /// Records deleted since the purger started.
    pub purged: u64,
    /// Whether the last round failed: the purger is backing off.
    pub backing_off: bool,
}

#[derive(Default)]
struct Counters {
    rounds: AtomicU64,
    failures: AtomicU64,
    purged: AtomicU64,
    backing_off: AtomicBool,
}

/// Deletes expired records in the background. Made by [`Purger::spawn`]; the returned
/// [`PurgeHandle`] owns the task.
///
/// Every interval (the first round runs at once) the purger calls
/// [`Store::purge_expired`] with the clock's time and the batch size, again and again until
/// a call deletes fewer than a batch, yielding to other tasks between batches, so one round
/// never holds a store's lock for more than one batch. It logs what it removed
/// (`tracing::info!` with the count, `debug!` when nothing was due).
///
/// While the store fails (down, locked, or a call that panics) it backs off: 1 s, 2 s, 4 s,
/// ... up to a limit ([`PurgeConfig::with_backoff`]), logging a warning when the store goes down
/// and one `info!` line when it is back, never one per attempt, and carries on by itself.
/// It never panics and never stops on its own; it stops when the handle is dropped or
/// [`PurgeHandle::shutdown`] is called.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use cloakroom::{MemoryStore, PurgeConfig, Purger, SystemClock};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new());
/// let purger = Purger::spawn(store, Arc::new(SystemClock), PurgeConfig::new(Duration::from_secs(300), 1000)?)?;
/// // ... serve requests; the purger stops when `purger` is dropped, or:
/// purger.shutdown().await;
/// # Ok::<(), cloakroom::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Purger;

impl Purger {
    /// Starts the purger on the current tokio runtime.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when called outside a tokio runtime (the task needs one to
    /// run on: call it from inside `#[tokio::main]` or `Runtime::block_on`).
    pub fn spawn(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: PurgeConfig,
    ) -> Result<PurgeHandle, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "the background purger needs a tokio runtime: start it from inside one \
                 (#[tokio::main] or Runtime::block_on)",
            )
            .with_source(e)
        })?;
        let (stop, stopped) = watch::channel(());
        let counters = Arc::new(Counters::default());
        let task = runtime.spawn(run(store, clock, config, counters.clone(), stopped));
        Ok(PurgeHandle {
            task: Some(task),
            stop: Some(stop),
            counters,
            config,
        })
    }
}

/// The running purger. Dropping it stops the task (at its next pause, or in the middle of a
/// store call, which then completes or not as that store's cancellation allows);
/// [`PurgeHandle::shutdown`] stops it after the current batch and waits for it.
pub struct PurgeHandle {
    task: Option<JoinHandle<()>>,
    stop: Option<watch::Sender<()>>,
    counters: Arc<Counters>,
    config: PurgeConfig,
}

impl fmt::Debug for PurgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            task,
            stop: _,
            counters: _,
            config,
        } = self;
        f.debug_struct("PurgeHandle")
            .field("config", config)
            .field("running", &task.as_ref().is_some_and(|t| !t.is_finished()))
            .field("stats", &self.stats())
            .finish()
    }
}

impl PurgeHandle {
    /// What the purger has done so far.
    pub fn stats(&self) -> PurgeStats {
        let c = &self.counters;
        PurgeStats {
            rounds: c.rounds.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            purged: c.purged.load(Ordering::Relaxed),
            backing_off: c.backing_off.load(Ordering::Relaxed),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> PurgeConfig {
        self.config
    }

    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the purger once the batch in flight (if any) is done, and waits for it.
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            // The task ends by itself once it sees the closed channel; it cannot panic
            // (rounds run in their own task), so the result says nothing new.
            let _ = task.await;
        }
    }
}

impl Drop for PurgeHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The purger's loop: a round, a pause (the interval, or the back-off), until stopped.
async fn run(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: PurgeConfig,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<()>,
) {
    let mut failures: u32 = 0;
    loop {
        // Each round runs in a task of its own, so a store call that panics is a failed
        // round, not a dead purger.
        let round = tokio::spawn(round(
            store.clone(),
            clock.clone(),
            config.batch,
            stopped.clone(),
        ));
        let outcome = match round.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => Err(Error::new(
                ErrorKind::Unavailable,
                "a store call panicked during the purge",
            )),
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        };
        let pause = match outcome {
            Ok(purged) => {
                counters.rounds.fetch_add(1, Ordering::Relaxed);
                counters.purged.fetch_add(purged as u64, Ordering::Relaxed);
                if failures > 0 {
                    tracing::info!(
                        failed_attempts = failures,
                        "session store is back: purging expired sessions again"
                    );
                    failures = 0;
                    counters.backing_off.store(false, Ordering::Relaxed);
                }
                if purged > 0 {
                    tracing::info!(purged, "purged expired sessions");
                } else {
                    tracing::debug!(purged, "no expired sessions to purge");
                }
                config.interval
            }
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                if failures == 1 {
                    counters.backing_off.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        "purging expired sessions failed: backing off until the store is back"
                    );
                }
                config.backoff(failures)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            // Every sender is gone: the handle was shut down or dropped.
            _ = stopped.changed() => return,
        }
    }
}

/// One round: batches until one comes back short. Returns how many records it deleted.
async fn round(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    batch: usize,
    stopped: watch::Receiver<()>,
) -> Result<usize, Error> {
    let now = clock.now();
    let mut total = 0usize;
    for _ in 0..MAX_BATCHES_PER_ROUND {
        let n = store.purge_expired(now, batch).await?;
        total = total.saturating_add(n);
        if n < batch || stopped.has_changed().is_err() {
            return Ok(total);
        }
        // Let requests at the store between two batches.
        tokio::task::yield_now().await;
    }
    tracing::warn!(
        purged = total,
        "purge round stopped after {MAX_BATCHES_PER_ROUND} full batches; the next round goes on"
    );
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limits() {
        let c = PurgeConfig::new(Duration::from_secs(300), 10).unwrap();
        let secs: Vec<u64> = (1..=9).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(c.backoff(u32::MAX).as_secs(), 60);
        let short = PurgeConfig::new(Duration::from_secs(5), 10).unwrap();
        assert_eq!(
            short.backoff(10).as_secs(),
            5,
            "never longer than the interval"
        );
        assert!(c.with_backoff(Duration::ZERO, Duration::ZERO).is_err());
        assert!(c
            .with_backoff(Duration::from_secs(2), Duration::from_secs(1))
            .is_err());
        let ms = c
            .with_backoff(Duration::from_millis(50), Duration::from_millis(300))
            .unwrap();
        let waits: Vec<u128> = (1..=5).map(|n| ms.backoff(n).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        assert!(PurgeConfig::new(Duration::from_secs(1), 0).is_err());
    }

    #[test]
    fn spawning_outside_a_runtime_is_a_clear_error() {
        let e = Purger::spawn(
            Arc::new(crate::MemoryStore::new()),
            Arc::new(crate::SystemClock),
            PurgeConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}
