//! The results: medians over the rounds, and the tables printed from them.

use std::time::Duration;

use crate::wrk::{Run, Workload};

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A workload's cells, one per connection count.
pub(crate) type WorkloadCells = (Workload, Vec<(usize, Cell)>);

/// One cell's result: medians over the rounds, failures summed.
pub(crate) struct Cell {
    pub(crate) ours: Run,
    pub(crate) theirs: Run,
}

impl Cell {
    pub(crate) fn ratio(&self) -> f64 {
        self.ours.ok_rps / self.theirs.ok_rps
    }
}

pub(crate) fn summarise(runs: &[Run]) -> Run {
    Run {
        requests: runs.iter().map(|r| r.requests).sum(),
        ok_rps: median(runs.iter().map(|r| r.ok_rps).collect()),
        p99: Duration::from_secs_f64(median(runs.iter().map(|r| r.p99.as_secs_f64()).collect())),
        failed: runs.iter().map(|r| r.failed).sum(),
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
