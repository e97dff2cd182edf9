//! [`MemcachedStoreBuilder`]: how to reach memcached.

use super::*;

/// How to reach memcached: built by [`MemcachedStore::builder`], finished by
/// [`MemcachedStoreBuilder::connect`].
#[derive(Debug)]
pub struct MemcachedStoreBuilder {
    pub(super) addr: String,
    pub(super) prefix: String,
    pub(super) pool_size: usize,
    pub(super) net: crate::options::NetOptions,
    pub(super) contention_budget: Duration,
}

impl MemcachedStoreBuilder {
    /// The prefix of every key (default `cloakroom:`): at most 100 printable ASCII
    /// characters, no spaces.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    crate::options::pool_size_setter!(" The most connections open at once (default 16).");

    crate::options::net_setters!(
        connect = " How long one connection attempt, or waiting for a free connection, may take (default 1 s).",
        command = " How long one round trip may take (default 1 s).",
    );

    /// How long one write keeps retrying its `gets`/`cas` loop while other writers of the
    /// same item get in between (default 5 s), before it gives up with
    /// [`ErrorKind::Unavailable`]. memcached has no server-side scripts, so a commit
    /// ([`Store::apply`]) is such a loop; it retries with a randomised backoff, so many
    /// overlapping requests of one session all get through well inside this budget.
    #[must_use]
    pub fn with_contention_budget(mut self, budget: Duration) -> Self {
        self.contention_budget = budget;
        self
    }

    /// Checks the settings and opens a first connection.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a bad prefix or pool size; [`ErrorKind::Unavailable`]
    /// if the server cannot be reached.
    pub async fn connect(self) -> Result<MemcachedStore, Error> {
        let ok_prefix =
            self.prefix.len() <= 100 && self.prefix.bytes().all(|b| b.is_ascii_graphic());
        if !ok_prefix {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a memcached key prefix is at most 100 printable ASCII characters, no spaces",
            ));
        }
        crate::options::check_pool_size(self.pool_size)?;
        let store = MemcachedStore {
            inner: Arc::new(Inner {
                addr: self.addr,
                prefix: self.prefix,
                connect_timeout: self.net.connect_timeout,
                command_timeout: self.net.command_timeout,
                contention_budget: self.contention_budget,
                stripes: crate::stripes::Stripes::new(),
                permits: Semaphore::new(self.pool_size),
                idle: Mutex::new(Vec::new()),
            }),
        };
        store.run("version", async |c| c.version().await).await?;
        Ok(store)
    }
}
