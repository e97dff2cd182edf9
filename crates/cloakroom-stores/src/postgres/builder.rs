//! [`PostgresStoreBuilder`]: how to reach PostgreSQL, and with what TLS.

use super::*;

/// How to reach PostgreSQL: built by [`PostgresStore::builder`], finished by
/// [`PostgresStoreBuilder::connect`].
pub struct PostgresStoreBuilder {
    pub(super) url: String,
    pub(super) schema: String,
    pub(super) pool_size: usize,
    pub(super) net: crate::options::NetOptions,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: it is not shown.
        let Self {
            url: _,
            schema,
            pool_size,
            net,
        } = self;
        f.debug_struct("PostgresStoreBuilder")
            .field("schema", schema)
            .field("pool_size", pool_size)
            .field("net", net)
            .finish_non_exhaustive()
    }
}

impl PostgresStoreBuilder {
    /// The schema the store's tables live in (default `cloakroom`): lowercase ASCII letters,
    /// digits and `_`, not starting with a digit. Created if missing.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    crate::options::pool_size_setter!(" The most connections the pool opens (default 16).");

    crate::options::net_setters!(
        connect = " How long opening a connection, or waiting for a pooled one, may take (default 1 s).",
        command = " How long one statement may take (default 1 s).",
        ca = " Connect with TLS, trusting the CA certificates in the PEM file `path` instead of the system's (the URL option `ca=PATH` does the same). TLS is then required.",
        plaintext = " Allow a connection without TLS to a host that is not this machine (the URL option `allow_plaintext_to_remote_host` does the same). Without it such a connection is refused: session records would cross the network readable and writable by anyone on the path. With it, `sslmode=prefer` (the default) still uses TLS when the server offers it.",
    );

    /// Builds the pool, then creates or migrates the schema.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a bad URL, schema name, pool size or CA file, and for
    /// a plaintext connection to a host that is not this machine (see the module docs);
    /// [`ErrorKind::Unavailable`] if the server cannot be reached or the migration fails.
    pub async fn connect(self) -> Result<PostgresStore, Error> {
        let valid_schema = !self.schema.is_empty()
            && self.schema.len() <= 63
            && !self.schema.starts_with(|c: char| c.is_ascii_digit())
            && self
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_schema {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a PostgreSQL schema name is 1 to 63 of [a-z0-9_], not starting with a digit",
            ));
        }
        crate::options::check_pool_size(self.pool_size)?;
        let (url, options) = transport::take_options(&self.url)?;
        let ca = self.net.ca.or(options.ca);
        let allow_plaintext =
            self.net.allow_plaintext_to_remote_host || options.allow_plaintext_to_remote_host;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "invalid PostgreSQL URL").with_source(e)
        })?;
        config.connect_timeout(self.net.connect_timeout);
        config.application_name("cloakroom");
        let tls = choose_tls(&mut config, ca.is_some(), allow_plaintext)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if tls {
            let rustls = transport::rustls_config(ca.as_deref())?;
            Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(rustls),
                manager_config,
            )
        } else {
            Manager::from_config(config, NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.net.connect_timeout))
            .create_timeout(Some(self.net.connect_timeout))
            .recycle_timeout(Some(self.net.connect_timeout))
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::InvalidInput, "cannot build the PostgreSQL pool")
                    .with_source(e)
            })?;
        let s = &self.schema;
        let sql = Sql {
            load: format!(
                "SELECT record, last_seen, idle_deadline FROM {s}.sessions
                 WHERE id = $1 AND expires_at > $2"
            ),
            create: format!(
                "INSERT INTO {s}.sessions (id, user_id, version, last_seen, idle_deadline,
                   absolute_deadline, expires_at, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING"
            ),
            update: format!(
                "WITH done AS (
                   UPDATE {s}.sessions SET user_id = $3, version = $4, last_seen = $5,
                     idle_deadline = $6, absolute_deadline = $7, expires_at = $8, record = $9
                   WHERE id = $1 AND version = $2 AND expires_at > $10 RETURNING 1)
                 SELECT (SELECT count(*) FROM done),
                        (SELECT expires_at > $10 FROM {s}.sessions WHERE id = $1)"
            ),
            apply_read: format!(
                "SELECT record, last_seen, idle_deadline FROM {s}.sessions
                 WHERE id = $1 AND expires_at > $2 FOR UPDATE"
            ),
            apply_write: format!(
                "UPDATE {s}.sessions SET version = $2, last_seen = $3, idle_deadline = $4,
                   expires_at = $5, record = $6
                 WHERE id = $1"
            ),
            touch: format!(
                "UPDATE {s}.sessions SET last_seen = $2,
                   idle_deadline = LEAST($3, absolute_deadline),
                   expires_at = LEAST($3, absolute_deadline)
                 WHERE id = $1 AND expires_at > $2"
            ),
            delete: format!("DELETE FROM {s}.sessions WHERE id = $1"),
            sessions_of: format!(
                "SELECT record, last_seen, idle_deadline FROM {s}.sessions
                 WHERE user_id = $1 AND expires_at > $2"
            ),
            revoke: format!(
                "DELETE FROM {s}.sessions
                 WHERE user_id = $1 AND ($2::bytea IS NULL OR id <> $2::bytea)"
            ),
            epoch: format!("SELECT epoch FROM {s}.user_epochs WHERE user_id = $1"),
            bump: format!(
                "INSERT INTO {s}.user_epochs (user_id, epoch) VALUES ($1, 1)
                 ON CONFLICT (user_id) DO UPDATE SET epoch = {s}.user_epochs.epoch + 1
                 RETURNING epoch"
            ),
            purge: format!(
                "DELETE FROM {s}.sessions WHERE id IN (
                   SELECT id FROM {s}.sessions WHERE expires_at <= $1
                   LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
        };
        let store = PostgresStore {
            pool,
            stripes: std::sync::Arc::new(crate::stripes::Stripes::new()),
            schema: self.schema,
            bound: self.net.connect_timeout + self.net.command_timeout,
            sql: std::sync::Arc::new(sql),
        };
        store.migrate().await?;
        Ok(store)
    }
}

/// Whether to connect with TLS, and the `sslmode` that goes with it (see the module docs).
pub(super) fn choose_tls(
    config: &mut tokio_postgres::Config,
    has_ca: bool,
    allow_plaintext: bool,
) -> Result<bool, Error> {
    // With `hostaddr`, the connection goes to those addresses (the host names are then
    // only what the certificate is checked against).
    let remote: Option<String> = if config.get_hostaddrs().is_empty() {
        config.get_hosts().iter().find_map(|h| match h {
            Host::Tcp(name) if !transport::is_loopback(name) => Some(name.clone()),
            _ => None,
        })
    } else {
        config
            .get_hostaddrs()
            .iter()
            .find(|a| !a.is_loopback())
            .map(ToString::to_string)
    };
    let mode = config.get_ssl_mode();
    if has_ca && mode == SslMode::Disable {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a CA file is named for PostgreSQL but the URL says sslmode=disable",
        ));
    }
    if let Some(host) = &remote {
        if !allow_plaintext {
            if mode == SslMode::Disable {
                return Err(transport::plaintext_refused(
                    "PostgreSQL",
                    host,
                    "remove sslmode=disable",
                ));
            }
            // No fallback to plaintext when the server declines TLS.
            config.ssl_mode(SslMode::Require);
        }
    }
    if has_ca {
        config.ssl_mode(SslMode::Require);
    }
    let mode = config.get_ssl_mode();
    Ok(mode == SslMode::Require || (remote.is_some() && mode == SslMode::Prefer))
}
