//! Purging expired records.

use super::*;

impl Inner {
    /// Deletes up to `limit` expired records. The candidates come from one scan of the
    /// directory, kept between calls: a purge run of many batches scans the directory once
    /// (and once more to find it done), not once per batch. Every candidate is read again
    /// under its lock and deleted only if it is not live at `now`. No clock is read: a
    /// writer's leftover temporary file is judged against `now` too.
    pub(super) fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        if limit == 0 {
            return Ok(0);
        }
        let mut count = 0;
        let mut scanned = false;
        while count < limit {
            let next = lock_candidates(&self.candidates).pop();
            let Some(id) = next else {
                if scanned {
                    break;
                }
                let found = self.scan_candidates(now)?;
                scanned = true;
                *lock_candidates(&self.candidates) = found;
                continue;
            };
            let _lock = self.lock_record(&id)?;
            let user = match self.read_record(&id) {
                Ok(Some(record)) if !record.is_live(now) => record.user_id,
                Ok(_) => continue,
                // Unreadable and past its hint: garbage, remove it.
                Err(e) if e.kind() == ErrorKind::Corrupt => None,
                Err(e) => return Err(e),
            };
            if self.unlink_record(&id)? {
                count += 1;
            }
            if let Some(user) = user {
                self.index_remove(&user, &id)?;
            }
        }
        if count > 0 {
            sync_dir(&self.sessions)?;
        }
        Ok(count)
    }

    /// One scan of the sessions directory: the records expired at `now` by their hint (at
    /// most [`MAX_CANDIDATES`]), removing writers' temporary files older than
    /// [`STALE_TEMP`] at `now`.
    fn scan_candidates(&self, now: u64) -> Result<Vec<IdHash>, Error> {
        #[cfg(test)]
        self.scans.fetch_add(1, Ordering::Relaxed);
        let entries = fs::read_dir(&self.sessions).map_err(io_at("listing", &self.sessions))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at("listing", &self.sessions))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable(format!("inspecting {name}"), e)),
            };
            if name.starts_with(".tmp.") {
                // Left by a writer that died. ctime is when it was last written (its mtime is
                // the hint).
                let age = now.saturating_sub(u64::try_from(meta.ctime()).unwrap_or(0));
                if age > STALE_TEMP.as_secs() {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            let Ok(id) = IdHash::from_hex(name) else {
                continue;
            };
            let hint = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            if hint > now && hint < MAX_HINT {
                continue; // not expired by its hint: do not even read it
            }
            found.push(id);
            if found.len() >= MAX_CANDIDATES {
                break;
            }
        }
        Ok(found)
    }
}

/// At most this many purge candidates are kept from one scan (32 bytes each).
const MAX_CANDIDATES: usize = 65_536;

fn lock_candidates(m: &Mutex<Vec<IdHash>>) -> MutexGuard<'_, Vec<IdHash>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
