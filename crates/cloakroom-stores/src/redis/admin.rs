//! The Redis store's operator queries: sessions by id-hash prefix, and counts.
//!
//! A child module of `redis`, so it reaches the store's connection and decoder; the store's
//! `impl Store` delegates to these in one line each. Both walk the purge index (every
//! record's id hash is in at least one of its keys: the buckets each shard's directory
//! names, and the single `expiry` key of older stores) with `ZSCAN`, a page at a time, so
//! the server is never blocked by one long command, and read the records a page per round
//! trip. A record filed twice (its entry moved, or a touch filed it under an earlier
//! expiry) is counted once.

use std::collections::HashSet;

use cloakroom::store::Error;
use cloakroom::{check_id_prefix, IdHash, Record, Stats};
use redis::Value;

use super::{bytes, parse_u64, shard_of_hex, unexpected, RedisStore, SHARDS};

/// How many index entries one `ZSCAN` call asks for.
const PAGE: usize = 1000;

impl RedisStore {
    /// The purge-index keys that may hold id hashes starting with `prefix`: the legacy key,
    /// and every bucket in the directory of each shard the prefix allows (one shard once
    /// the prefix has two digits).
    async fn index_keys(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let shards: Vec<u8> = match shard_of_hex(prefix.as_bytes()) {
            Some(shard) => vec![shard],
            None => (0..SHARDS).collect(),
        };
        let buckets = self.buckets(&shards, None, "index buckets").await?;
        let mut keys = vec![self.legacy_expiry_key()];
        keys.extend(
            buckets
                .into_iter()
                .map(|(shard, bucket)| self.bucket_key(shard, bucket)),
        );
        Ok(keys)
    }

    /// The next page of id hashes (starting with `prefix`) of a walk over the purge index,
    /// each hash once; `None` when the walk is done.
    async fn next_page(&self, walk: &mut Walk, prefix: &str) -> Result<Option<Vec<IdHash>>, Error> {
        loop {
            let Some(key) = walk.keys.last() else {
                return Ok(None);
            };
            let (next, ids) = self.scan_page(key, prefix, walk.cursor).await?;
            if next == 0 {
                walk.keys.pop();
            }
            walk.cursor = next;
            let fresh: Vec<IdHash> = ids.into_iter().filter(|id| walk.seen.insert(*id)).collect();
            if !fresh.is_empty() {
                return Ok(Some(fresh));
            }
        }
    }

    /// One `ZSCAN` page of the index key `key` from `cursor`: the id hashes whose hex
    /// starts with `prefix` (all with `""`), and the next cursor (0 when the scan is done).
    async fn scan_page(
        &self,
        key: &str,
        prefix: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<IdHash>), Error> {
        let mut cmd = redis::cmd("ZSCAN");
        cmd.arg(key)
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
        let mut walk = Walk::new(self.index_keys(prefix).await?);
        while let Some(ids) = self.next_page(&mut walk, prefix).await? {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.add_command(self.hgetall(id));
            }
            let replies = self.bounded("find_by_prefix", pipe).await?;
            for (id, reply) in ids.iter().zip(&replies) {
                if let Some(record) = self.decode(id, reply, now)? {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn admin_stats(&self, now: u64) -> Result<Stats, Error> {
        let (mut live, mut expired, mut size) = (0u64, 0u64, 0u64);
        let mut walk = Walk::new(self.index_keys("").await?);
        while let Some(ids) = self.next_page(&mut walk, "").await? {
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
            let replies = self.bounded("stats", pipe).await?;
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
        }
        Ok(Stats::new(live, expired, Some(size)))
    }
}

/// A walk over purge-index keys: the keys still to scan (the last one first), the cursor
/// in it, and the id hashes handed out so far.
struct Walk {
    keys: Vec<String>,
    cursor: u64,
    seen: HashSet<IdHash>,
}

impl Walk {
    fn new(keys: Vec<String>) -> Self {
        Self {
            keys,
            cursor: 0,
            seen: HashSet::new(),
        }
    }
}
