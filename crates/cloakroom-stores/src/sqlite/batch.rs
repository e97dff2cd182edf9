//! Group commit: the commits ([`Store::apply`](cloakroom::Store::apply)) that arrive while
//! the writer connection is busy are written together, in one transaction.
//!
//! A commit queues itself, then takes the writer. If a commit that held the writer before it
//! already wrote it (its answer is there), it returns that answer; otherwise it writes every
//! queued commit, its own included, in one `BEGIN IMMEDIATE` transaction, in the order they
//! queued, and answers each. In WAL mode a transaction's cost is mostly per transaction
//! (the write lock, the WAL frames of every page it touched, the WAL index), so under load
//! a batch of n commits costs little more than one; alone, a commit is a batch of one and
//! costs what it did before.
//!
//! Each commit in a batch reads the row as the commits before it in the batch left it, so
//! two commits of one session in one batch apply one after the other, as they would in two
//! transactions. A commit that fails on its own (the session is gone, a record that does
//! not decode, a value that does not encode) writes nothing and fails alone; a failure of
//! the database (a statement, or the `COMMIT`) rolls the whole batch back and fails every
//! commit in it, so nothing is acknowledged that was not committed.

use std::sync::{Arc, Mutex};

use cloakroom::store::{Error, ErrorKind};
use cloakroom::{Applied, Changes, IdHash};
use rusqlite::{params, Connection, TransactionBehavior};

use super::{db_err, live_record, lock, sql_time, sql_version, Inner};

/// The most commits one transaction takes; the rest wait for the next.
const MAX_BATCH: usize = 256;

/// One queued commit.
pub(super) struct Job {
    id: IdHash,
    changes: Changes,
    now: u64,
    idle_deadline: u64,
    answer: Arc<Answer>,
}

/// Where a commit's result is left for it.
#[derive(Default)]
struct Answer(Mutex<Option<Result<Applied, Error>>>);

/// The commits waiting for the writer.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) jobs: Mutex<Vec<Job>>,
    /// Transactions written and commits in them, for the tests.
    #[cfg(test)]
    pub(super) batches: Mutex<Vec<usize>>,
}

impl Inner {
    pub(super) fn apply(
        &self,
        id: &IdHash,
        changes: &Changes,
        now: u64,
        idle_deadline: u64,
    ) -> Result<Applied, Error> {
        let answer = Arc::new(Answer::default());
        lock(&self.batch.jobs).push(Job {
            id: *id,
            changes: changes.clone(),
            now,
            idle_deadline,
            answer: Arc::clone(&answer),
        });
        loop {
            let mut writer = lock(&self.writer);
            if let Some(done) = lock(&answer.0).take() {
                // A commit that held the writer before us wrote ours too.
                return done;
            }
            let jobs = {
                let mut queue = lock(&self.batch.jobs);
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect::<Vec<_>>()
            };
            #[cfg(test)]
            lock(&self.batch.batches).push(jobs.len());
            let results = write_batch(&mut writer, &jobs);
            for (job, result) in jobs.iter().zip(results) {
                *lock(&job.answer.0) = Some(result);
            }
            drop(writer);
            if let Some(done) = lock(&answer.0).take() {
                return done;
            }
            // More than MAX_BATCH commits queued before ours: ours goes in a later batch.
        }
    }
}

/// Writes `jobs` in one transaction: one result per job, in order.
fn write_batch(conn: &mut Connection, jobs: &[Job]) -> Vec<Result<Applied, Error>> {
    match try_batch(conn, jobs) {
        Ok(results) => results,
        Err(e) => {
            let message = format!("{e}");
            let mut first = Some(e);
            jobs.iter()
                .map(|_| {
                    Err(first.take().unwrap_or_else(|| {
                        Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "a commit written in the same SQLite transaction failed: {message}"
                            ),
                        )
                    }))
                })
                .collect()
        }
    }
}

/// The batch's transaction: `Err` (the whole batch rolled back) only for a failure of the
/// database; a failure of one commit is its own result.
fn try_batch(conn: &mut Connection, jobs: &[Job]) -> Result<Vec<Result<Applied, Error>>, Error> {
    // `BEGIN IMMEDIATE` takes the write lock first (waiting up to the busy timeout for
    // another process), so nothing changes a row between our read and our write.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err("apply"))?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        results.push(apply_one(&tx, job)?);
    }
    tx.commit().map_err(db_err("apply"))?;
    Ok(results)
}

/// One commit inside the batch's transaction. The outer `Err` is a database failure (the
/// batch fails); the inner one is this commit's own.
fn apply_one(tx: &Connection, job: &Job) -> Result<Result<Applied, Error>, Error> {
    let Some(current) = live_record(tx, &job.id, job.now, "apply")? else {
        return Ok(Err(Error::not_found()));
    };
    let next = match cloakroom::apply_changes(current, &job.changes, job.now, job.idle_deadline)
        .and_then(|next| Ok((next.encode()?, sql_version(next.version)?, next)))
    {
        Ok(next) => next,
        Err(e) => return Ok(Err(e)),
    };
    let (bytes, version, next) = next;
    // The user does not change, so `user_id` (and its index) is not written.
    tx.prepare_cached(
        "UPDATE sessions SET expires_at = ?1, version = ?2, record = ?3 WHERE id = ?4",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            sql_time(next.expires_at()),
            version,
            bytes,
            job.id.as_bytes()
        ])
    })
    .map_err(db_err("apply"))?;
    Ok(Ok(Applied::new(next.version, next.idle_deadline)))
}
