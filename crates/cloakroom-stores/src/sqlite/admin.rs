//! The SQLite store's operator queries: sessions by id-hash prefix, and counts.
//!
//! A child module of `sqlite`, so it reaches the store's connections; the store's
//! `impl Store` delegates to these in one line each.

use cloakroom::store::Error;
use cloakroom::{check_id_prefix, IdHash, Record, Stats};
use rusqlite::{params, TransactionBehavior};

use super::{db_err, decode, id_record_rows, sql_time, sql_version, Inner, SqliteStore};

impl SqliteStore {
    /// Stores many new records in one transaction: for bulk imports, and for filling a
    /// store in tests and benchmarks (a million rows in seconds, where one
    /// [`Store::create`](cloakroom::Store::create) per record commits a million times).
    /// Unlike `create`, an id hash already stored, live or not, fails the whole batch.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`](cloakroom::ErrorKind::Unavailable) if the backend fails
    /// or an id is taken (nothing is written then).
    pub async fn create_many(&self, records: Vec<Record>) -> Result<u64, Error> {
        self.run(move |inner| {
            let mut rows = Vec::with_capacity(records.len());
            for r in &records {
                rows.push((r.encode()?, sql_version(r.version)?));
            }
            inner.with_writer(|conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db_err("create_many"))?;
                {
                    let mut stmt = tx
                        .prepare_cached(
                            "INSERT INTO sessions (id, user_id, expires_at, version, record)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )
                        .map_err(db_err("create_many"))?;
                    for (r, (bytes, version)) in records.iter().zip(&rows) {
                        stmt.execute(params![
                            r.id_hash.as_bytes(),
                            r.user_id,
                            sql_time(r.expires_at()),
                            version,
                            bytes,
                        ])
                        .map_err(db_err("create_many"))?;
                    }
                }
                tx.commit().map_err(db_err("create_many"))?;
                Ok(records.len() as u64)
            })
        })
        .await
    }
}

/// The smallest and largest 32-byte id hashes whose hex starts with `prefix`: the ids are a
/// BLOB primary key compared byte by byte, so the prefix is one range of that index.
fn id_range(prefix: &str) -> Result<([u8; 32], [u8; 32]), Error> {
    check_id_prefix(prefix)?;
    let pad = |digit: char| {
        let mut hex = prefix.to_owned();
        while hex.len() < 64 {
            hex.push(digit);
        }
        IdHash::from_hex(&hex).map(|id| *id.as_bytes())
    };
    Ok((pad('0')?, pad('f')?))
}

impl Inner {
    pub(super) fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        let (low, high) = id_range(prefix)?;
        let rows = self.with_reader(|conn| {
            id_record_rows(
                conn,
                "SELECT id, record FROM sessions WHERE id BETWEEN ?1 AND ?2 AND expires_at > ?3",
                params![low.as_slice(), high.as_slice(), sql_time(now)],
                "find_by_prefix",
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, bytes) in rows {
            let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) else {
                continue;
            };
            let record = decode(&IdHash::from_bytes(id), &bytes)?;
            if record.is_live(now) {
                out.push(record);
            }
        }
        Ok(out)
    }

    pub(super) fn stats(&self, now: u64) -> Result<Stats, Error> {
        self.with_reader(|conn| {
            // Both counts come from the expiry index alone; the bytes are the database's
            // pages in use (file size less free pages).
            let (live, expired): (i64, i64) = conn
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM sessions WHERE expires_at > ?1),
                            (SELECT count(*) FROM sessions WHERE expires_at <= ?1)",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![sql_time(now)], |row| Ok((row.get(0)?, row.get(1)?)))
                })
                .map_err(db_err("stats"))?;
            let pages: i64 = conn
                .query_row(
                    "SELECT page_count - freelist_count FROM pragma_page_count, pragma_freelist_count",
                    [],
                    |row| row.get(0),
                )
                .map_err(db_err("stats"))?;
            let page_size: i64 = conn
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .map_err(db_err("stats"))?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(Stats::new(
                count(live),
                count(expired),
                Some(count(pages).saturating_mul(count(page_size))),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_one_range_of_ids() {
        let (low, high) = id_range("ab1").unwrap();
        assert_eq!(&low[..2], &[0xab, 0x10]);
        assert_eq!(&high[..2], &[0xab, 0x1f]);
        assert!(low[2..].iter().all(|&b| b == 0));
        assert!(high[2..].iter().all(|&b| b == 0xff));
        assert!(id_range("").is_err());
        assert!(id_range("AB").is_err());
        assert!(id_range("xyz").is_err());
    }

    fn store_with_expired_rows(dir: &std::path::Path, n: u32) -> Inner {
        let inner = Inner::open(super::super::SqliteOptions::new(dir.join("s.db"))).unwrap();
        inner
            .with_writer(|conn| {
                let tx = conn.transaction().unwrap();
                for i in 0..n {
                    let mut id = [0u8; 32];
                    id[..4].copy_from_slice(&i.to_be_bytes());
                    tx.execute(
                        "INSERT INTO sessions (id, user_id, expires_at, version, record)
                         VALUES (?1, NULL, 100, 1, x'00')",
                        params![id.as_slice()],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
                Ok(())
            })
            .unwrap();
        inner
    }

    /// The purge's inner SELECT reads the expiry index alone and the DELETE finds rows by
    /// rowid: neither walks the table or the random-keyed primary-key index.
    #[test]
    fn a_purge_batch_reads_the_expiry_index_and_deletes_by_rowid() {
        let dir = tempfile::tempdir().unwrap();
        let inner = store_with_expired_rows(dir.path(), 10);
        let plan: Vec<String> = inner
            .with_writer(|conn| {
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {}", super::super::PURGE_SQL))
                    .unwrap();
                let rows = stmt.query_map(params![200, 5], |row| row.get(3)).unwrap();
                Ok(rows.map(Result::unwrap).collect())
            })
            .unwrap();
        let plan = plan.join(" | ");
        assert!(
            plan.contains("SEARCH sessions USING COVERING INDEX sessions_by_expiry"),
            "{plan}"
        );
        assert!(
            plan.contains("SEARCH sessions USING INTEGER PRIMARY KEY (rowid=?)"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN"), "{plan}");
    }

    /// A batch runs with a large page cache and puts the connection's own back after (so a
    /// daemon's writer keeps no purge-sized cache), and it holds no lock once it returns:
    /// another connection can start a write transaction at once.
    #[test]
    fn a_purge_batch_restores_the_cache_and_releases_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let inner = store_with_expired_rows(dir.path(), 25);
        let cache = |inner: &Inner| -> i64 {
            inner
                .with_writer(|c| Ok(c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap()))
                .unwrap()
        };
        let before = cache(&inner);
        assert_ne!(before, super::super::PURGE_CACHE_SIZE);
        let other = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let mut total = 0;
        loop {
            let n = inner.purge_expired(200, 10).unwrap();
            total += n;
            assert_eq!(cache(&inner), before, "the cache size is put back");
            other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").unwrap();
            if n < 10 {
                break;
            }
        }
        assert_eq!(total, 25);
        assert_eq!(inner.stats(200).unwrap().expired_not_purged, 0);
    }
}
