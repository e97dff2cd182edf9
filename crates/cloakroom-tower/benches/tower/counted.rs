//! Counting the Cloakroom side's store calls (`BENCH_COUNT=1`): how many round trips a
//! request costs.

use std::sync::Arc;

use crate::hooked::{Hooked, Hooks, Op};

/// The Cloakroom sides' store calls, when `BENCH_COUNT` is set.
pub(crate) static CALLS: std::sync::OnceLock<Arc<Calls>> = std::sync::OnceLock::new();

/// The store calls a Cloakroom side made, by kind (`BENCH_COUNT=1`): how many round trips a
/// request costs.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    counts: [std::sync::atomic::AtomicU64; 6],
}

pub(crate) const CALL_NAMES: [&str; 6] = ["load", "apply", "touch", "create", "delete", "other"];

impl Calls {
    pub(crate) fn snapshot(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.counts[i].load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A store that counts the calls it passes on.
pub(crate) type Counted = Hooked<Arc<Calls>>;

#[async_trait::async_trait]
impl Hooks for Arc<Calls> {
    async fn before(&self, op: Op) -> Result<(), cloakroom::store::Error> {
        // The index in `CALL_NAMES`.
        let i = match op {
            Op::Load => 0,
            Op::Apply => 1,
            Op::Touch => 2,
            Op::Create => 3,
            Op::Delete => 4,
            _ => 5,
        };
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
