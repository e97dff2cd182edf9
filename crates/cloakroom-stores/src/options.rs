//! What the builders of the networked stores share: the two timeouts, and for the stores
//! that speak TLS (Redis, PostgreSQL) the CA file and the plaintext guard. One type, one set
//! of setters ([`net_setters!`]); each store keeps its own words for them. The stores with
//! a pool of connections (PostgreSQL, memcached) also share its size's default, setter
//! ([`pool_size_setter!`]) and check.

use std::path::PathBuf;
use std::time::Duration;

/// The connect and command timeouts unless configured otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The most connections a pooled store opens unless configured otherwise.
#[cfg(any(feature = "postgres", feature = "memcached"))]
pub(crate) const DEFAULT_POOL_SIZE: usize = 16;

/// Refuses a pool of no connections (a store that could never answer).
#[cfg(any(feature = "postgres", feature = "memcached"))]
pub(crate) fn check_pool_size(size: usize) -> Result<(), cloakroom::store::Error> {
    if size == 0 {
        return Err(cloakroom::store::Error::new(
            cloakroom::store::ErrorKind::InvalidInput,
            "a pool of 0 connections",
        ));
    }
    Ok(())
}

/// The connection settings every networked store's builder has.
#[derive(Debug, Clone)]
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) struct NetOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) allow_plaintext_to_remote_host: bool,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_TIMEOUT,
            command_timeout: DEFAULT_TIMEOUT,
            ca: None,
            allow_plaintext_to_remote_host: false,
        }
    }
}

/// The setters of [`NetOptions`] for a builder whose field `net` holds them, documented by
/// the strings given: `with_connect_timeout` and `with_command_timeout`, and with `ca` and
/// `plaintext` also `with_ca_file` and `allow_plaintext_to_remote_host`.
macro_rules! net_setters {
    (connect = $connect:literal, command = $command:literal $(,)?) => {
        #[doc = $connect]
        #[must_use]
        pub fn with_connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.net.connect_timeout = timeout;
            self
        }

        #[doc = $command]
        #[must_use]
        pub fn with_command_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.net.command_timeout = timeout;
            self
        }
    };
    (
        connect = $connect:literal,
        command = $command:literal,
        ca = $ca:literal,
        plaintext = $plaintext:literal $(,)?
    ) => {
        $crate::options::net_setters!(connect = $connect, command = $command);

        #[doc = $ca]
        #[must_use]
        pub fn with_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
            self.net.ca = Some(path.into());
            self
        }

        #[doc = $plaintext]
        #[must_use]
        pub fn allow_plaintext_to_remote_host(mut self) -> Self {
            self.net.allow_plaintext_to_remote_host = true;
            self
        }
    };
}
pub(crate) use net_setters;

/// The setter `with_pool_size` for a builder whose field `pool_size` holds it, documented by
/// the string given; [`check_pool_size`] checks it.
#[cfg(any(feature = "postgres", feature = "memcached"))]
macro_rules! pool_size_setter {
    ($doc:literal) => {
        #[doc = $doc]
        #[must_use]
        pub fn with_pool_size(mut self, size: usize) -> Self {
            self.pool_size = size;
            self
        }
    };
}
#[cfg(any(feature = "postgres", feature = "memcached"))]
pub(crate) use pool_size_setter;
