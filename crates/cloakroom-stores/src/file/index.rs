//! The per-user index: one directory per user of empty files named by id hash.

use super::*;

impl Inner {
    pub(super) fn index_dir(&self, user: &str) -> PathBuf {
        self.users.join(user_key(user))
    }

    pub(super) fn index_add(&self, user: &str, id: &IdHash) -> Result<(), Error> {
        let dir = self.index_dir(user);
        let entry = dir.join(id.to_hex());
        // A concurrent `index_remove` of the user's last entry may remove the directory
        // between our mkdir and our create: try again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => sync_dir(&self.users)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable(format!("creating {}", shown(&dir)), e)),
            }
            let created = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&entry);
            match created {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => continue,
                Err(e) => return Err(unavailable(format!("creating {}", shown(&entry)), e)),
            }
        }
        // The entry must be durable before the record is: the index never misses a session.
        sync_dir(&dir)
    }

    pub(super) fn index_remove(&self, user: &str, id: &IdHash) -> Result<(), Error> {
        let dir = self.index_dir(user);
        let entry = dir.join(id.to_hex());
        match fs::remove_file(&entry) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(unavailable(format!("removing {}", shown(&entry)), e)),
        }
        // Fails (harmlessly) unless that was the user's last entry.
        let _ = fs::remove_dir(&dir);
        Ok(())
    }

    /// The id hashes listed in the user's index.
    pub(super) fn index_entries(&self, user: &str) -> Result<Vec<IdHash>, Error> {
        let dir = self.index_dir(user);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_dir(&self.users)?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(unavailable(format!("listing {}", shown(&dir)), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at("listing", &dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| IdHash::from_hex(n).ok())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Drops the index entry of `id` under `user` if the record is gone or belongs to
    /// someone else (checked again under the record's lock).
    pub(super) fn prune_entry(&self, user: &str, id: &IdHash) -> Result<(), Error> {
        let _lock = self.lock_record(id)?;
        let stale = match self.read_record(id) {
            Ok(Some(record)) => record.user_id.as_deref() != Some(user),
            Ok(None) => true,
            Err(e) if e.kind() == ErrorKind::Corrupt => false,
            Err(e) => return Err(e),
        };
        if stale {
            self.index_remove(user, id)?;
        }
        Ok(())
    }
}
