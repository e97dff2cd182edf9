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
