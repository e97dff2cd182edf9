//! [`RedisStoreBuilder`]: how to reach Redis.

use super::*;

/// How to reach Redis: built by [`RedisStore::builder`], finished by
/// [`RedisStoreBuilder::connect`].
pub struct RedisStoreBuilder {
    pub(super) url: String,
    pub(super) prefix: String,
    pub(super) net: crate::options::NetOptions,
    pub(super) cluster: bool,
    pub(super) replica_acks: Option<u32>,
    pub(super) replica_wait: Option<Duration>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: it is not shown.
        let Self {
            url: _,
            prefix,
            net,
            cluster,
            replica_acks,
            replica_wait,
        } = self;
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", prefix)
            .field("net", net)
            .field("cluster", cluster)
            .field("replica_acks", replica_acks)
            .field("replica_wait", replica_wait)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key this store writes (default `cloakroom:`). Two stores
    /// with different prefixes on one server never see each other's sessions. It must not
    /// contain `{` or `}` (they would break the hash tags).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    crate::options::net_setters!(
        connect = " How long one connection attempt may take (default 1 s).",
        command = " How long the server may take to answer one round trip (default 1 s).",
        ca = " Trust the CA certificates in the PEM file `path` instead of the system's (the URL option `ca=PATH` does the same). Needs a `rediss://` URL.",
        plaintext = " Allow `redis://` (no TLS) to a host that is not this machine (the URL option `allow_plaintext_to_remote_host` does the same). Without it such a URL is refused: session records would cross the network readable and writable by anyone on the path.",
    );

    /// Treat the URL as naming nodes of a Redis Cluster (as the scheme `redis+cluster://`
    /// does): `redis://HOST:PORT` or `rediss://HOST:PORT`, several nodes separated by
    /// commas.
    #[must_use]
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// In a cluster: how many replicas must confirm each write (`WAIT`) before it counts as
    /// done (default 1). Redis replicates asynchronously, so a write confirmed by its primary
    /// alone is lost if that primary dies before passing it on and its replica is promoted.
    /// A write not confirmed within the replica wait ([`with_replica_wait`]) fails as
    /// `Unavailable`, saying that it may have been applied. 0 turns this off (faster, but a
    /// failover may then lose acknowledged writes); a cluster without replicas needs 0.
    ///
    /// [`with_replica_wait`]: Self::with_replica_wait
    #[must_use]
    pub fn with_replica_acks(mut self, replicas: u32) -> Self {
        self.replica_acks = Some(replicas);
        self
    }

    /// In a cluster: how long a write waits for its replicas' confirmation (`WAIT`) before it
    /// fails as `Unavailable` (default: a fifth of the command timeout, 10 to 200 ms). While
    /// it waits, the store's write connection to that primary carries nothing else, so a long
    /// wait delays every write to that primary (reads go over a connection of their own and
    /// are not held up); a short one fails writes when a replica lags (a busy machine, a slow
    /// disk under `appendfsync always`). Must be shorter than the command
    /// timeout: [`connect`](Self::connect) refuses it otherwise.
    #[must_use]
    pub fn with_replica_wait(mut self, wait: Duration) -> Self {
        self.replica_wait = Some(wait);
        self
    }

    /// Connects and loads the scripts.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a bad URL, prefix or CA file, and for `redis://` to a
    /// host that is not this machine without `allow_plaintext_to_remote_host`;
    /// [`ErrorKind::Unavailable`] if the server cannot be reached within the connect timeout.
    pub async fn connect(self) -> Result<RedisStore, Error> {
        if self.prefix.contains(['{', '}']) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a Redis key prefix must not contain braces (they are hash tags)",
            ));
        }
        let wait_ms = match self.replica_wait {
            Some(wait) if wait.is_zero() || wait >= self.net.command_timeout => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the replica wait ({wait:?}) must be more than zero and shorter than \
                         the command timeout ({:?})",
                        self.net.command_timeout
                    ),
                ))
            }
            // Whole milliseconds, at least one (`WAIT 1 0` would wait forever).
            Some(wait) => u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            // `WAIT` blocks the multiplexed connection to that primary for as long as it
            // waits (a primary without a replica makes it wait it out), so by default it
            // gets a fifth of the command timeout, 10 to 200 ms.
            None => u64::try_from(self.net.command_timeout.as_millis() / 5)
                .unwrap_or(u64::MAX)
                .clamp(10, 200),
        };
        let target = Target::parse(&self.url, self.cluster)?;
        let ca = match self.net.ca.as_ref().or(target.options.ca.as_ref()) {
            Some(path) if !target.tls => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "a CA file ({}) is named but the Redis URL is not rediss://",
                        path.display()
                    ),
                ))
            }
            Some(path) => Some(transport::read_ca_file(path)?),
            None => None,
        };
        let allow_plaintext = self.net.allow_plaintext_to_remote_host
            || target.options.allow_plaintext_to_remote_host;
        for node in &target.nodes {
            check_plaintext(node, allow_plaintext)?;
        }
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.clone(),
        };
        let bound = self.net.connect_timeout + self.net.command_timeout;
        let conn = if target.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(target.nodes.clone())
                .connection_timeout(self.net.connect_timeout)
                .response_timeout(self.net.command_timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(100);
            if ca.is_some() {
                builder = builder.certs(certs());
            }
            let client = builder.build().map_err(|e| {
                Error::new(ErrorKind::InvalidInput, "invalid Redis Cluster URL").with_source(e)
            })?;
            let link = ClusterLink::connect(client, self.net.connect_timeout);
            match tokio::time::timeout(bound, link).await {
                Ok(Ok(link)) => Conn::Cluster {
                    link: std::sync::Arc::new(link),
                    replica_acks: self.replica_acks.unwrap_or(1),
                    wait_ms,
                },
                Ok(Err(e)) => {
                    return Err(Error::unavailable("cannot connect to the Redis Cluster", e))
                }
                Err(e) => {
                    return Err(Error::unavailable(
                        "connecting to the Redis Cluster timed out",
                        e,
                    ))
                }
            }
        } else {
            let url = target.nodes[0].as_str();
            let client = if ca.is_some() {
                redis::Client::build_with_tls(url, certs())
            } else {
                redis::Client::open(url)
            }
            .map_err(|e| Error::new(ErrorKind::InvalidInput, "invalid Redis URL").with_source(e))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.net.connect_timeout))
                .set_response_timeout(Some(self.net.command_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(self.net.connect_timeout);
            match tokio::time::timeout(bound, ConnectionManager::new_with_config(client, config))
                .await
            {
                Ok(Ok(conn)) => Conn::Single(conn),
                Ok(Err(e)) => return Err(Error::unavailable("cannot connect to Redis", e)),
                Err(e) => return Err(Error::unavailable("connecting to Redis timed out", e)),
            }
        };
        let store = RedisStore {
            conn,
            prefix: self.prefix,
            bound,
            scripts: std::sync::Arc::new(Scripts::new()),
        };
        store.load_scripts().await?;
        Ok(store)
    }
}
