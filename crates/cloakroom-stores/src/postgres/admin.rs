//! The PostgreSQL store's operator queries: sessions by id-hash prefix, and counts.
//!
//! A child module of `postgres`, so it reaches the store's pool; the store's `impl Store`
//! delegates to these in one line each.

use cloakroom::store::Error;
use cloakroom::{check_id_prefix, IdHash, Record, Stats};

use super::{column_type, i64_of, u64_of, PostgresStore};

/// The smallest and largest ids whose hex starts with `prefix` (ids are a `bytea` primary
/// key, compared byte by byte, so a prefix is one range of its index).
fn id_range(prefix: &str) -> Result<(Vec<u8>, Vec<u8>), Error> {
    check_id_prefix(prefix)?;
    let pad = |digit: char| {
        let mut hex = prefix.to_owned();
        while hex.len() < 64 {
            hex.push(digit);
        }
        IdHash::from_hex(&hex).map(|id| id.as_bytes().to_vec())
    };
    Ok((pad('0')?, pad('f')?))
}

impl PostgresStore {
    pub(super) async fn admin_find_by_prefix(
        &self,
        prefix: &str,
        now: u64,
    ) -> Result<Vec<Record>, Error> {
        let (low, high) = id_range(prefix)?;
        let now = i64_of("now", now)?;
        let sql = format!(
            "SELECT record, last_seen, idle_deadline FROM {}.sessions
             WHERE id BETWEEN $1 AND $2 AND expires_at > $3",
            self.schema
        );
        let rows = self
            .rows("find_by_prefix", &sql, &[&low, &high, &now])
            .await?;
        rows.iter().map(Self::decode).collect()
    }

    pub(super) async fn admin_stats(&self, now: u64) -> Result<Stats, Error> {
        let now = i64_of("now", now)?;
        let sql = format!(
            "SELECT count(*) FILTER (WHERE expires_at > $1),
                    count(*) FILTER (WHERE expires_at <= $1),
                    pg_total_relation_size('{s}.sessions')
             FROM {s}.sessions",
            s = self.schema
        );
        let row = self.row("stats", &sql, &[&now]).await?;
        Ok(Stats::new(
            u64_of(row.try_get(0).map_err(column_type)?)?,
            u64_of(row.try_get(1).map_err(column_type)?)?,
            Some(u64_of(row.try_get(2).map_err(column_type)?)?),
        ))
    }
}
