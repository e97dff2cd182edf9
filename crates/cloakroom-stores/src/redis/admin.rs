//! The Redis store's operator queries: sessions by id-hash prefix, and counts.
//!
//! A child module of `redis`, so it reaches the store's connection and decoder; the store's
//! `impl Store` delegates to these in one line each. Both walk the `expiry` sorted set (it
//! holds every record's id hash) with `ZSCAN`, a page at a time, so the server is never
//! blocked by one long command, and read the records a page per round trip.

use cloakroom::store::Error;
use cloakroom::{check_id_prefix, IdHash, Record, Stats};
use redis::Value;

use super::{bytes, parse_u64, unexpected, RedisStore};

/// How many index entries one `ZSCAN` call asks for.
const PAGE: usize = 1000;

impl RedisStore {
    /// One `ZSCAN` page of the expiry index from `cursor`: the id hashes whose hex starts
    /// with `prefix` (all with `""`), and the next cursor (0 when the scan is done).
    async fn scan_page(&self, prefix: &str, cursor: u64) -> Result<(u64, Vec<IdHash>), Error> {
        let mut cmd = redis::cmd("ZSCAN");
        cmd.arg(self.expiry_key())
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(PAGE);
        let Value::Array(reply) = self.one("ZSCAN", cmd).await? else {
            return Err(unexpected("ZSCAN"));
        };
        let [next, Value::Array(members)] = reply.as_slice() else {
            return Err(unexpected("ZSCAN"));
        };
        // Members and scores alternate; a member is a record's id hash in hex.
        let ids = members
            .iter()
            .step_by(2)
            .filter_map(bytes)
            .filter_map(|hex| std::str::from_utf8(hex).ok())
            .filter_map(|hex| IdHash::from_hex(hex).ok())
            .collect();
        let next = bytes(next)
            .and_then(parse_u64)
            .ok_or_else(|| unexpected("ZSCAN"))?;
        Ok((next, ids))
    }

    pub(super) async fn admin_find_by_prefix(
        &self,
        prefix: &str,
        now: u64,
    ) -> Result<Vec<Record>, Error> {
        check_id_prefix(prefix)?;
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, ids) = self.scan_page(prefix, cursor).await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.add_command(self.hgetall(id));
            }
            let replies = if ids.is_empty() {
                Vec::new()
            } else {
                self.bounded("find_by_prefix", pipe).await?
            };
            for (id, reply) in ids.iter().zip(&replies) {
                if let Some(record) = self.decode(id, reply, now)? {
                    out.push(record);
                }
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    pub(super) async fn admin_stats(&self, now: u64) -> Result<Stats, Error> {
        let (mut live, mut expired, mut size) = (0u64, 0u64, 0u64);
        let mut cursor = 0;
        loop {
            let (next, ids) = self.scan_page("", cursor).await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                let key = self.record_key(id);
                pipe.cmd("HGET").arg(&key).arg("e");
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .arg("SAMPLES")
                    .arg(0);
            }
            let replies = if ids.is_empty() {
                Vec::new()
            } else {
                self.bounded("stats", pipe).await?
            };
            for pair in replies.chunks_exact(2) {
                // A key the server already expired is gone: only an index entry is left,
                // which the next purge drops.
                let Some(e) = bytes(&pair[0]).and_then(parse_u64) else {
                    continue;
                };
                if e > now {
                    live += 1;
                } else {
                    expired += 1;
                }
                if let Value::Int(n) = pair[1] {
                    size += u64::try_from(n).unwrap_or(0);
                }
            }
            if next == 0 {
                return Ok(Stats::new(live, expired, Some(size)));
            }
            cursor = next;
        }
    }
}
