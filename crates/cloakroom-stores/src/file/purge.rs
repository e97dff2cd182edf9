//! Purging expired records.

use super::*;

impl Inner {
    pub(super) fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, Error> {
        if limit == 0 {
            return Ok(0);
        }
        let entries = fs::read_dir(&self.sessions).map_err(io_at("listing", &self.sessions))?;
        let wall_clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut count = 0;
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
                // the hint), measured on the machine's clock.
                let age = wall_clock.saturating_sub(u64::try_from(meta.ctime()).unwrap_or(0));
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
            if count >= limit {
                break;
            }
        }
        if count > 0 {
            sync_dir(&self.sessions)?;
        }
        Ok(count)
    }
}
