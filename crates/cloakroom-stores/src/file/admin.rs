//! The file store's operator queries: sessions by id-hash prefix, and counts.
//!
//! A child module of `file`, so it reaches the store's directory; the store's `impl Store`
//! delegates to these in one line each. Both walk `sessions/` (one directory listing) and
//! take no lock: records are replaced by rename, so each read sees a whole record.

use std::fs;
use std::io;
use std::time::UNIX_EPOCH;

use cloakroom::store::{Error, ErrorKind};
use cloakroom::{check_id_prefix, IdHash, Record, Stats};

use super::{io_at, unavailable, Inner, MAX_HINT};

impl Inner {
    /// The id hashes of the record files in `sessions/` whose names start with `prefix`,
    /// with each file's expiry hint (mtime) and size.
    fn walk(&self, prefix: &str) -> Result<Vec<(IdHash, u64, u64)>, Error> {
        let entries = fs::read_dir(&self.sessions).map_err(io_at("listing", &self.sessions))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at("listing", &self.sessions))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(prefix) {
                continue;
            }
            let Ok(id) = IdHash::from_hex(name) else {
                continue; // a temporary file, or something not ours
            };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable(format!("inspecting {name}"), e)),
            };
            let hint = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            out.push((id, hint, meta.len()));
        }
        Ok(out)
    }

    pub(super) fn find_by_prefix(&self, prefix: &str, now: u64) -> Result<Vec<Record>, Error> {
        check_id_prefix(prefix)?;
        let mut out = Vec::new();
        for (id, hint, _) in self.walk(prefix)? {
            if hint <= now {
                continue; // expired by its hint: not live
            }
            match self.read_record(&id) {
                Ok(Some(record)) if record.is_live(now) => out.push(record),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    tracing::warn!(session = %id, error = %e, "skipping a corrupt session file");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(super) fn stats(&self, now: u64) -> Result<Stats, Error> {
        let (mut live, mut expired, mut bytes) = (0u64, 0u64, 0u64);
        for (id, hint, size) in self.walk("")? {
            bytes += size;
            // The mtime is the record's expiry, so only a capped hint needs the record read.
            let is_live = if hint < MAX_HINT {
                hint > now
            } else {
                matches!(self.read_record(&id), Ok(Some(r)) if r.is_live(now))
            };
            if is_live {
                live += 1;
            } else {
                expired += 1;
            }
        }
        Ok(Stats::new(live, expired, Some(bytes)))
    }
}
