//! Unit tests of the SQLite store's reader pool.

use super::*;

/// A burst of concurrent reads opens at most `max_readers` connections; the rest wait for
/// one to come free, and every read still completes.
#[test]
fn concurrent_reads_open_at_most_max_readers_connections() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions::new(dir.path().join("readers.db"))
        .with_max_readers(3)
        .with_max_idle_readers(1);
    let inner = Arc::new(Inner::open(options).unwrap());
    let threads: Vec<_> = (0..24)
        .map(|_| {
            let inner = Arc::clone(&inner);
            std::thread::spawn(move || {
                inner.with_reader(|conn| {
                    std::thread::sleep(Duration::from_millis(10));
                    conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                        .map_err(db_err("select"))
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), 1);
    }
    let readers = lock(&inner.readers);
    assert!(
        readers.peak <= 3,
        "{} readers were open at once",
        readers.peak
    );
    assert!(readers.peak >= 2, "the burst never ran reads in parallel");
    assert_eq!(readers.open, readers.idle.len());
    assert!(readers.idle.len() <= 1);
}

/// Commits that queue while the writer is busy are written in one transaction; each reads
/// the row as the one before it in the batch left it, and one that fails on its own (its
/// session is gone) fails alone.
#[test]
fn commits_queued_behind_the_writer_are_written_in_one_transaction() {
    use cloakroom::{Changes, Policy, SessionId, Value};
    const NOW: u64 = 1_700_000_000;
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(Inner::open(SqliteOptions::new(dir.path().join("batch.db"))).unwrap());
    let record = Record::new(
        SessionId::generate().unwrap().hash(),
        NOW,
        &Policy::default(),
    );
    inner.create(&record, NOW).unwrap();
    let gone = SessionId::generate().unwrap().hash();
    // Hold the writer while 16 commits of one session (and one of a session that does not
    // exist) queue behind it.
    let writer = lock(&inner.writer);
    let commits: Vec<_> = (0..17)
        .map(|k| {
            let inner = Arc::clone(&inner);
            let id = if k == 16 { gone } else { record.id_hash };
            std::thread::spawn(move || {
                let mut c = Changes::new();
                c.set(format!("k{k}"), Value::from(k));
                inner.apply(&id, &c, NOW, NOW + 60)
            })
        })
        .collect();
    while lock(&inner.batch.jobs).len() < 17 {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(writer);
    let mut versions = Vec::new();
    for (k, t) in commits.into_iter().enumerate() {
        match t.join().unwrap() {
            Ok(applied) => versions.push(applied.version),
            Err(e) => {
                assert_eq!(k, 16, "commit {k} failed: {e}");
                assert_eq!(e.kind(), ErrorKind::NotFound);
            }
        }
    }
    versions.sort_unstable();
    let first = record.version + 1;
    assert_eq!(
        versions,
        (first..first + 16).collect::<Vec<_>>(),
        "one version per commit"
    );
    assert_eq!(
        *lock(&inner.batch.batches),
        vec![17],
        "one transaction for all 17"
    );
    let stored = inner.load(&record.id_hash, NOW).unwrap().unwrap();
    for k in 0..16 {
        assert_eq!(stored.data[&format!("k{k}")], Value::from(k));
    }
}

/// A failure of the database inside a batch rolls it all back and fails every commit in it
/// (nothing acknowledged that was not committed).
#[test]
fn a_batch_the_database_refuses_fails_every_commit_in_it() {
    use cloakroom::{Changes, Policy, SessionId, Value};
    const NOW: u64 = 1_700_000_000;
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(Inner::open(SqliteOptions::new(dir.path().join("refused.db"))).unwrap());
    let record = Record::new(
        SessionId::generate().unwrap().hash(),
        NOW,
        &Policy::default(),
    );
    inner.create(&record, NOW).unwrap();
    // A trigger that makes the third update of the batch fail.
    lock(&inner.writer)
        .execute_batch(
            "CREATE TABLE n (x INTEGER); INSERT INTO n VALUES (0);
             CREATE TRIGGER fail_third AFTER UPDATE ON sessions BEGIN
               UPDATE n SET x = x + 1;
               SELECT RAISE(ABORT, 'refused') WHERE (SELECT x FROM n) = 3;
             END;",
        )
        .unwrap();
    let writer = lock(&inner.writer);
    let commits: Vec<_> = (0..4)
        .map(|k| {
            let inner = Arc::clone(&inner);
            let id = record.id_hash;
            std::thread::spawn(move || {
                let mut c = Changes::new();
                c.set(format!("k{k}"), Value::from(k));
                inner.apply(&id, &c, NOW, NOW + 60)
            })
        })
        .collect();
    while lock(&inner.batch.jobs).len() < 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(writer);
    for t in commits {
        let e = t.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    let stored = inner.load(&record.id_hash, NOW).unwrap().unwrap();
    assert_eq!(stored.version, record.version, "the batch was rolled back");
    assert!(stored.data.is_empty());
}
