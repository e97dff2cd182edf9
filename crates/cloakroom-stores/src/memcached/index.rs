//! What the store does between its verbs: keys, index items and their CAS loops, one record's
//! CAS loop.

use super::*;

impl MemcachedStore {
    /// A builder for a store on the server at `addr` (`host:port`).
    pub fn builder(addr: impl Into<String>) -> MemcachedStoreBuilder {
        MemcachedStoreBuilder {
            addr: addr.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            pool_size: crate::options::DEFAULT_POOL_SIZE,
            net: crate::options::NetOptions::default(),
            contention_budget: DEFAULT_CONTENTION_BUDGET,
        }
    }

    /// A store on `addr` with the default prefix, pool size and timeouts.
    ///
    /// # Errors
    /// As [`MemcachedStoreBuilder::connect`].
    pub async fn connect(addr: impl Into<String>) -> Result<Self, Error> {
        Self::builder(addr).connect().await
    }

    /// The key the record of `id` is kept under (for operators and tests).
    pub fn record_key(&self, id: &IdHash) -> String {
        format!("{}r:{}", self.inner.prefix, id.to_hex())
    }

    pub(super) fn user_hash(user: &str) -> String {
        let digest = Sha256::digest(user.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(super) fn index_key(&self, user: &str) -> String {
        format!("{}u:{}", self.inner.prefix, Self::user_hash(user))
    }

    pub(super) fn epoch_key(&self, user: &str) -> String {
        format!("{}e:{}", self.inner.prefix, Self::user_hash(user))
    }

    /// A purge-index item: the sessions of one shard whose expiry is in `bucket`.
    pub(super) fn bucket_key(&self, bucket: u64, shard: u8) -> String {
        format!("{}x:{bucket}:{shard:x}", self.inner.prefix)
    }

    /// The purge directory: the buckets that have items (8 bytes each, repeats allowed).
    pub(super) fn directory_key(&self) -> String {
        format!("{}x:dir", self.inner.prefix)
    }

    pub(super) fn shard_of(id: &IdHash) -> u8 {
        id.as_bytes()[0] % BUCKET_SHARDS
    }

    /// Appends `(id, expiry)` to the purge-index item of that expiry: `append` (no read, no
    /// `cas`, no retry loop), or `add` when the item does not exist yet, which also appends
    /// the bucket to the directory. One round trip in the common case, at most five. The
    /// index is best effort: when an item is full (memcached's item limit) the entry is left
    /// out, and the record goes by its server TTL alone.
    pub(super) async fn purge_entry(
        &self,
        id: IdHash,
        expiry: u64,
        reference: u64,
    ) -> Result<(), Error> {
        let bucket = expiry / BUCKET_SECS;
        let key = self.bucket_key(bucket, Self::shard_of(&id));
        let entry = encode_entries(&[(id, expiry)]);
        let ttl = exptime(
            (bucket + 1)
                .saturating_mul(BUCKET_SECS)
                .saturating_add(BUCKET_GRACE),
            reference,
        );
        for _ in 0..2 {
            let appended = self
                .run("append (purge index)", async |c| {
                    c.store("append", &key, FLAGS_INDEX, 0, &entry, None).await
                })
                .await?;
            match appended {
                Reply::Stored => return Ok(()),
                Reply::TooLarge => {
                    tracing::warn!(key, "a memcached purge-index item is full");
                    return Ok(());
                }
                _ => {}
            }
            let added = self
                .run("add (purge index)", async |c| {
                    c.store("add", &key, FLAGS_INDEX, ttl, &entry, None).await
                })
                .await?;
            if added == Reply::Stored {
                return self.directory_add(bucket).await;
            }
            // Another writer added it in between: append again.
        }
        Ok(())
    }

    pub(super) async fn directory_add(&self, bucket: u64) -> Result<(), Error> {
        let key = self.directory_key();
        let entry = bucket.to_be_bytes();
        for verb in ["append", "add", "append"] {
            let reply = self
                .run("append (purge directory)", async |c| {
                    c.store(verb, &key, FLAGS_DIRECTORY, 0, &entry, None).await
                })
                .await?;
            match reply {
                Reply::Stored => return Ok(()),
                Reply::TooLarge => {
                    tracing::warn!(key, "the memcached purge directory is full: run purge");
                    return Ok(());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs `f` on a pooled connection: waiting for one is bounded by the connect timeout,
    /// `f` by the command timeout. A connection that saw any error is dropped.
    pub(super) async fn run<T, F>(&self, what: &'static str, f: F) -> Result<T, Error>
    where
        F: AsyncFnOnce(&mut Conn) -> Result<T, McError>,
    {
        let inner = &*self.inner;
        let _permit = tokio::time::timeout(inner.connect_timeout, inner.permits.acquire())
            .await
            .map_err(|e| Error::unavailable(format!("no free memcached connection for {what}"), e))?
            .map_err(|e| Error::unavailable("the memcached pool is closed", e))?;
        let pooled = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => Conn::connect(&inner.addr, inner.connect_timeout)
                .await
                .map_err(|e| {
                    Error::unavailable(format!("cannot connect to memcached for {what}"), e)
                })?,
        };
        match tokio::time::timeout(inner.command_timeout, f(&mut conn)).await {
            Ok(Ok(v)) => {
                inner
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                Ok(v)
            }
            Ok(Err(e)) => Err(Error::unavailable(format!("memcached failed {what}"), e)),
            Err(e) => Err(Error::unavailable(
                format!("memcached did not answer {what} in time"),
                e,
            )),
        }
    }

    /// `gets` of one record: its decoded value and cas token.
    pub(super) async fn gets_record(&self, id: &IdHash) -> Result<Option<(Record, u64)>, Error> {
        let key = self.record_key(id);
        let item = self.run("gets", async |c| c.gets_one(&key).await).await?;
        let Some(item) = item else { return Ok(None) };
        if item.flags != FLAGS_RECORD {
            return Err(not_ours(&key));
        }
        let record = Record::decode(&item.data)?;
        if record.id_hash != *id {
            return Err(not_ours(&key));
        }
        Ok(Some((record, item.cas)))
    }

    /// Changes an index item under `gets`/`cas` (`add` when it is missing). `f` returns
    /// `false` to write nothing.
    pub(super) async fn modify_index<F>(&self, key: &str, f: F) -> Result<(), Error>
    where
        F: FnMut(&mut Vec<(IdHash, u64)>) -> bool + Send,
    {
        self.modify_item(key, 0, f).await
    }

    /// [`Self::modify_index`] for an item written with the TTL `ttl` (0: none); an emptied
    /// item with a TTL is deleted.
    pub(super) async fn modify_item<F>(&self, key: &str, ttl: u32, mut f: F) -> Result<(), Error>
    where
        F: FnMut(&mut Vec<(IdHash, u64)>) -> bool + Send,
    {
        let give_up = Instant::now() + self.inner.contention_budget;
        for attempt in 0.. {
            if !another_round(attempt, give_up).await {
                break;
            }
            let item = self
                .run("gets (index)", async |c| c.gets_one(key).await)
                .await?;
            let (mut list, cas) = match &item {
                Some(item) if item.flags == FLAGS_INDEX => {
                    (entries(key, &item.data)?, Some(item.cas))
                }
                Some(_) => return Err(not_ours(key)),
                None => (Vec::new(), None),
            };
            if !f(&mut list) {
                return Ok(());
            }
            if ttl != 0 && list.is_empty() {
                // (An entry appended since the read is lost with it; its record still goes
                // by its server TTL.)
                self.run("delete (index)", async |c| c.delete(key).await)
                    .await?;
                return Ok(());
            }
            let bytes = encode_entries(&list);
            if bytes.len() + ITEM_OVERHEAD > ITEM_LIMIT {
                return Err(too_large(key, bytes.len()));
            }
            let stored = self
                .run("cas (index)", async |c| match cas {
                    Some(cas) => {
                        c.store("cas", key, FLAGS_INDEX, ttl, &bytes, Some(cas))
                            .await
                    }
                    None => c.store("add", key, FLAGS_INDEX, ttl, &bytes, None).await,
                })
                .await?;
            match stored {
                Reply::Stored => return Ok(()),
                Reply::TooLarge => return Err(too_large(key, bytes.len())),
                _ => {}
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "the memcached index {key} kept changing under one write for {:?}",
                self.inner.contention_budget
            ),
        ))
    }

    /// Adds (or raises/lowers) the entry of `id` in a user index (`raise`) or a purge
    /// shard (lower).
    pub(super) async fn index_entry(
        &self,
        key: &str,
        id: IdHash,
        expiry: u64,
        raise: bool,
    ) -> Result<(), Error> {
        self.modify_index(key, |list| match list.iter_mut().find(|(i, _)| *i == id) {
            Some((_, e)) if raise && *e >= expiry => false,
            Some((_, e)) if !raise && *e <= expiry => false,
            Some((_, e)) => {
                *e = expiry;
                true
            }
            None => {
                list.push((id, expiry));
                true
            }
        })
        .await
    }

    pub(super) async fn index_record(&self, record: &Record) -> Result<(), Error> {
        let e = record.expires_at();
        if let Some(user) = &record.user_id {
            self.index_entry(&self.index_key(user), record.id_hash, e, true)
                .await?;
        }
        self.purge_entry(record.id_hash, e, record.last_seen).await
    }

    /// The `gets`/`cas` loop shared by update, apply and touch: `change` gets the live
    /// record and returns the record to write (or an error). It retries, with [`backoff`],
    /// for as long as other writers get in between, up to the contention budget: every lost
    /// round means another write went through, so the loop ends as soon as the others are
    /// done.
    pub(super) async fn cas_loop<F>(
        &self,
        id: &IdHash,
        now: u64,
        mut change: F,
    ) -> Result<Record, Error>
    where
        F: FnMut(Record) -> Result<Record, Error> + Send,
    {
        let key = self.record_key(id);
        let give_up = Instant::now() + self.inner.contention_budget;
        for attempt in 0.. {
            if !another_round(attempt, give_up).await {
                break;
            }
            let Some((current, cas)) = self.gets_record(id).await? else {
                return Err(Error::not_found());
            };
            if !current.is_live(now) {
                return Err(Error::not_found());
            }
            let (was, was_user) = (current.expires_at(), current.user_id.clone());
            let next = change(current)?;
            // Indexes learn of a later expiry (user index) or an earlier one (purge index)
            // before the record has it: they may over-state, never miss.
            if let Some(user) = next.user_id.as_ref() {
                if next.expires_at() > was || was_user.as_ref() != Some(user) {
                    self.index_entry(&self.index_key(user), *id, next.expires_at(), true)
                        .await?;
                }
            }
            if next.expires_at() < was {
                self.purge_entry(*id, next.expires_at(), now).await?;
            }
            let bytes = next.encode()?;
            if bytes.len() + ITEM_OVERHEAD > ITEM_LIMIT {
                return Err(too_large(&key, bytes.len()));
            }
            let ttl = exptime(next.expires_at(), now);
            let stored = self
                .run("cas", async |c| {
                    c.store("cas", &key, FLAGS_RECORD, ttl, &bytes, Some(cas))
                        .await
                })
                .await?;
            match stored {
                Reply::Stored => return Ok(next),
                Reply::NotFound => return Err(Error::not_found()),
                // Another writer got in between: read again.
                Reply::Exists | Reply::NotStored => {}
                Reply::TooLarge => return Err(too_large(&key, bytes.len())),
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "the memcached record {key} kept changing under one write for {:?}",
                self.inner.contention_budget
            ),
        ))
    }
}
