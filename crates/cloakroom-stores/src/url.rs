//! Naming a store with one URL: the `--store` flag of `cloakroomd` and of the `cloakroom`
//! command, and `CLOAKROOM_STORE`.
//!
//! | URL | store | feature |
//! |---|---|---|
//! | `sqlite://PATH` (also `sqlite:PATH`) | [`SqliteStore`](crate::SqliteStore) on the file `PATH` | `sqlite` |
//! | `file://DIR` | [`FileStore`](crate::FileStore) in the directory `DIR` | `file` |
//! | `redis://…`, `rediss://…` (TLS) | [`RedisStore`](crate::RedisStore) on one server, the URL as the `redis` crate reads it | `redis` |
//! | `redis+cluster://HOST:PORT,HOST:PORT`, `rediss+cluster://…` | [`RedisStore`](crate::RedisStore) on a Redis Cluster | `redis` |
//! | `postgres://…`, `postgresql://…` | [`PostgresStore`](crate::PostgresStore) | `postgres` |
//! | `memcache://HOST:PORT` | [`MemcachedStore`](crate::MemcachedStore) | `memcached` |
//! | `cloakroomd+ipc://PATH` | `RemoteStore` on the daemon's socket file `PATH` | `remote` |
//! | `cloakroomd+tcp://HOST:PORT` | `RemoteStore` on the daemon at `HOST:PORT` | `remote` |
//!
//! The Redis and PostgreSQL URLs also take the store's own query options `ca=PATH` (a PEM
//! file of CA certificates to trust for TLS) and `allow_plaintext_to_remote_host` (without
//! it, a connection without TLS to a host other than this machine is refused).
//!
//! `sqlite:///var/db/s.db` names an absolute path and `sqlite://s.db` a relative one. A
//! scheme this build does not have is an error naming the feature it needs, never a
//! fallback to another store.

use std::path::PathBuf;
use std::sync::Arc;

use cloakroom::store::{Error, ErrorKind};
use cloakroom::Store;

/// A parsed store URL. [`StoreUrl::open`] connects to it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `sqlite://PATH`: one SQLite file.
    Sqlite(PathBuf),
    /// `file://DIR`: a file per session in a directory.
    File(PathBuf),
    /// `redis://…`, `rediss://…`, `redis+cluster://…`, `rediss+cluster://…`: the whole URL,
    /// as [`RedisStore::builder`](crate::RedisStore::builder) reads it.
    Redis(String),
    /// `postgres://…`, or a key=value connection string (`host=db port=5432 dbname=s`): the
    /// whole of it, as `tokio-postgres` reads it (the store's own options `ca` and
    /// `allow_plaintext_to_remote_host` may be given as keys too).
    Postgres(String),
    /// `memcache://HOST:PORT`: the server address.
    Memcached(String),
    /// `cloakroomd+ipc://PATH` or `cloakroomd+tcp://HOST:PORT`: the session daemon, by its
    /// ZeroMQ endpoint (`ipc://PATH`, `tcp://HOST:PORT`).
    Remote(String),
}

/// The schemes [`StoreUrl::parse`] knows, for error messages and `--help`.
pub const SCHEMES: &str = "sqlite://PATH, file://DIR, redis://HOST[:PORT][/DB], \
                           rediss://HOST[:PORT][/DB], redis+cluster://HOST:PORT,HOST:PORT, \
                           postgres://USER@HOST[:PORT]/DB, memcache://HOST:PORT, \
                           cloakroomd+ipc://PATH, cloakroomd+tcp://HOST:PORT";

/// Whether `s` is a PostgreSQL key=value connection string (`host=db port=5432 dbname=s`)
/// rather than a URL: no `://`, and it starts with `keyword=`.
pub(crate) fn is_conninfo(s: &str) -> bool {
    let first = s.split_whitespace().next().unwrap_or("");
    !s.contains("://")
        && first.split_once('=').is_some_and(|(key, _)| {
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

impl StoreUrl {
    /// Reads a store URL.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an unknown scheme or an empty path or address; the
    /// message names the URL's scheme (never the rest, which may hold a password) and the
    /// schemes that exist.
    pub fn parse(url: &str) -> Result<Self, Error> {
        if is_conninfo(url) {
            return Ok(Self::Postgres(url.to_owned()));
        }
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(invalid(format!(
                "a store URL starts with a scheme; expected one of {SCHEMES}"
            )));
        };
        let after_slashes = rest.strip_prefix("//");
        let path = |what: &str| -> Result<PathBuf, Error> {
            let path = after_slashes.unwrap_or(rest);
            if path.is_empty() {
                return Err(invalid(format!("the {scheme}: store URL has no {what}")));
            }
            Ok(PathBuf::from(path))
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Self::Sqlite(path("file path")?)),
            "file" => Ok(Self::File(path("directory")?)),
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
                Ok(Self::Redis(url.to_owned()))
            }
            "postgres" | "postgresql" => Ok(Self::Postgres(url.to_owned())),
            "memcache" | "memcached" => {
                let addr = after_slashes.unwrap_or(rest).trim_end_matches('/');
                if addr.is_empty() || !addr.contains(':') {
                    return Err(invalid(format!(
                        "the {scheme}: store URL needs HOST:PORT, e.g. memcache://127.0.0.1:11211"
                    )));
                }
                Ok(Self::Memcached(addr.to_owned()))
            }
            "cloakroomd+ipc" => Ok(Self::Remote(format!(
                "ipc://{}",
                path("socket path")?.display()
            ))),
            "cloakroomd+tcp" => {
                let addr = after_slashes.unwrap_or(rest).trim_end_matches('/');
                if addr.is_empty() || !addr.contains(':') {
                    return Err(invalid(format!(
                        "the {scheme}: store URL needs HOST:PORT, e.g. cloakroomd+tcp://127.0.0.1:5555"
                    )));
                }
                Ok(Self::Remote(format!("tcp://{addr}")))
            }
            _ => Err(invalid(format!(
                "unknown store URL scheme `{scheme}:`; expected one of {SCHEMES}"
            ))),
        }
    }

    /// The scheme, as written in messages (`sqlite`, `redis`, ...).
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::File(_) => "file",
            Self::Redis(_) => "redis",
            Self::Postgres(_) => "postgres",
            Self::Memcached(_) => "memcache",
            Self::Remote(endpoint) if endpoint.starts_with("ipc:") => "cloakroomd+ipc",
            Self::Remote(_) => "cloakroomd+tcp",
        }
    }

    /// Opens the store: creates or migrates its file, directory or schema, and connects.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if this build lacks the store's feature; otherwise what
    /// the store's own `open`/`connect` returns (`Unavailable` when it cannot be reached).
    pub async fn open(&self) -> Result<Arc<dyn Store>, Error> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => Ok(Arc::new(crate::SqliteStore::open(path.clone()).await?)),
            #[cfg(feature = "file")]
            Self::File(dir) => Ok(Arc::new(crate::FileStore::open(dir.clone()).await?)),
            #[cfg(feature = "redis")]
            Self::Redis(url) => Ok(Arc::new(crate::RedisStore::connect(url.clone()).await?)),
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => Ok(Arc::new(crate::PostgresStore::connect(url.clone()).await?)),
            #[cfg(feature = "memcached")]
            Self::Memcached(addr) => {
                Ok(Arc::new(crate::MemcachedStore::connect(addr.clone()).await?))
            }
            #[cfg(feature = "remote")]
            Self::Remote(endpoint) => Ok(Arc::new(
                crate::RemoteStore::connect(endpoint.clone()).await?,
            )),
            #[allow(unreachable_patterns)]
            other => Err(invalid(format!(
                "this build has no {scheme}: store (build cloakroom-stores with feature `{feature}`)",
                scheme = other.scheme(),
                feature = match other {
                    Self::Memcached(_) => "memcached",
                    Self::Remote(_) => "remote",
                    _ => other.scheme(),
                },
            ))),
        }
    }
}

impl StoreUrl {
    /// Opens the store with a [`CachedStore`](crate::CachedStore) of `capacity` records in
    /// front of it, kept coherent by the backend's invalidation channel: `sqlite:`, `redis:`
    /// and `postgres:` URLs.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a store without an invalidation channel (`file:`,
    /// `memcache:`: a cache there could serve a logged-out session) and for the daemon
    /// (`cloakroomd+…:`, which caches next to its store itself), or a capacity of 0;
    /// otherwise as [`StoreUrl::open`] and the cache's constructor.
    pub async fn open_cached(&self, capacity: usize) -> Result<Arc<dyn Store>, Error> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let store = crate::SqliteStore::open(path.clone()).await?;
                Ok(Arc::new(crate::CachedStore::sqlite(store, capacity).await?))
            }
            #[cfg(feature = "redis")]
            Self::Redis(url) => {
                let store = crate::RedisStore::connect(url.clone()).await?;
                Ok(Arc::new(
                    crate::CachedStore::redis(store, url, capacity).await?,
                ))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => {
                let store = crate::PostgresStore::connect(url.clone()).await?;
                Ok(Arc::new(
                    crate::CachedStore::postgres(store, url, capacity).await?,
                ))
            }
            Self::Remote(_) => Err(invalid(format!(
                "no session cache over the daemon ({}:): cloakroomd caches next to its store \
                 (its `cache_size`); open it without a cache",
                self.scheme()
            ))),
            Self::File(_) | Self::Memcached(_) => Err(invalid(format!(
                "the {}: store has no invalidation channel, so it cannot be cached safely; \
                 open it without a cache",
                self.scheme()
            ))),
            // A scheme this build lacks: `open` says which feature it needs.
            #[allow(unreachable_patterns)]
            other => match other.open().await {
                Err(e) => Err(e),
                Ok(_) => Err(invalid(format!(
                    "no session cache for the {}: store",
                    other.scheme()
                ))),
            },
        }
    }
}

/// Prints the scheme and the path or host, never a password in the URL.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) | Self::File(path) => {
                write!(f, "{}://{}", self.scheme(), path.display())
            }
            Self::Memcached(addr) => write!(f, "memcache://{addr}"),
            Self::Remote(endpoint) => write!(f, "cloakroomd+{endpoint}"),
            // A key=value connection string: its host, port and database only.
            Self::Postgres(conninfo) if is_conninfo(conninfo) => {
                let shown: Vec<&str> = conninfo
                    .split_whitespace()
                    .filter(|pair| {
                        ["host=", "hostaddr=", "port=", "dbname="]
                            .iter()
                            .any(|key| pair.starts_with(key))
                    })
                    .collect();
                write!(f, "postgres: {}", shown.join(" "))
            }
            Self::Redis(url) | Self::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or((url, ""));
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                write!(f, "{scheme}://{host}")
            }
        }
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        Self::parse(url)
    }
}

/// Parses `url` and opens the store it names: `cloakroom_stores::open("sqlite://s.db")`.
///
/// # Errors
/// As [`StoreUrl::parse`] and [`StoreUrl::open`].
pub async fn open(url: &str) -> Result<Arc<dyn Store>, Error> {
    StoreUrl::parse(url)?.open().await
}

/// Parses `url` and opens the store it names with a session cache of `capacity` records in
/// front of it: see [`StoreUrl::open_cached`].
///
/// # Errors
/// As [`StoreUrl::parse`] and [`StoreUrl::open_cached`].
pub async fn open_cached(url: &str, capacity: usize) -> Result<Arc<dyn Store>, Error> {
    StoreUrl::parse(url)?.open_cached(capacity).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_parses_to_its_store() {
        assert_eq!(
            StoreUrl::parse("sqlite:///var/db/s.db").unwrap(),
            StoreUrl::Sqlite("/var/db/s.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite://data/s.db").unwrap(),
            StoreUrl::Sqlite("data/s.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:s.db").unwrap(),
            StoreUrl::Sqlite("s.db".into())
        );
        assert_eq!(
            StoreUrl::parse("file:///srv/sessions").unwrap(),
            StoreUrl::File("/srv/sessions".into())
        );
        assert_eq!(
            StoreUrl::parse("redis://127.0.0.1:6379/2").unwrap(),
            StoreUrl::Redis("redis://127.0.0.1:6379/2".into())
        );
        for url in [
            "rediss://cache:6380?ca=/etc/ssl/ca.pem",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            "rediss+cluster://a:7000",
        ] {
            assert_eq!(StoreUrl::parse(url).unwrap(), StoreUrl::Redis(url.into()));
        }
        assert_eq!(
            StoreUrl::parse("postgresql://u@h/test").unwrap(),
            StoreUrl::Postgres("postgresql://u@h/test".into())
        );
        assert_eq!(
            StoreUrl::parse("memcache://127.0.0.1:11211/").unwrap(),
            StoreUrl::Memcached("127.0.0.1:11211".into())
        );
        assert_eq!(
            StoreUrl::parse("cloakroomd+ipc:///run/cloakroomd/cloakroomd.sock").unwrap(),
            StoreUrl::Remote("ipc:///run/cloakroomd/cloakroomd.sock".into())
        );
        assert_eq!(
            StoreUrl::parse("cloakroomd+tcp://127.0.0.1:5555").unwrap(),
            StoreUrl::Remote("tcp://127.0.0.1:5555".into())
        );
        let url = StoreUrl::parse("cloakroomd+ipc://./data/cloakroomd.sock").unwrap();
        assert_eq!(url.scheme(), "cloakroomd+ipc");
        assert_eq!(
            format!("{url:?}"),
            "cloakroomd+ipc://./data/cloakroomd.sock"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_schemes_that_exist() {
        for (url, says) in [
            ("mysql://h/db", "unknown store URL scheme `mysql:`"),
            ("sessions.db", "starts with a scheme"),
            ("sqlite://", "has no file path"),
            ("file:", "has no directory"),
            ("memcache://localhost", "needs HOST:PORT"),
            ("cloakroomd+tcp://localhost", "needs HOST:PORT"),
            ("cloakroomd+ipc://", "has no socket path"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}");
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
        let err = StoreUrl::parse("mysql://root:hunter2@h/db").unwrap_err();
        assert!(err.to_string().contains("sqlite://PATH"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_never_shows_a_password() {
        let url = StoreUrl::parse("host=db.example password=hunter2 port=5432 dbname=s").unwrap();
        assert!(matches!(url, StoreUrl::Postgres(_)));
        assert_eq!(
            format!("{url:?}"),
            "postgres: host=db.example port=5432 dbname=s"
        );
        let url = StoreUrl::parse("postgres://app:hunter2@db.example:5432/s").unwrap();
        assert_eq!(format!("{url:?}"), "postgres://db.example:5432/s");
        let url = StoreUrl::parse("redis://:hunter2@cache:6379").unwrap();
        assert_eq!(format!("{url:?}"), "redis://cache:6379");
        let url = StoreUrl::parse("rediss+cluster://:hunter2@a:7000,b:7001?ca=/c.pem").unwrap();
        assert_eq!(
            format!("{url:?}"),
            "rediss+cluster://a:7000,b:7001?ca=/c.pem"
        );
    }

    #[tokio::test]
    async fn open_cached_refuses_stores_without_an_invalidation_channel() {
        for (url, says) in [
            ("file:///tmp/x", "no invalidation channel"),
            ("memcache://127.0.0.1:11211", "no invalidation channel"),
            (
                "cloakroomd+tcp://127.0.0.1:5555",
                "cloakroomd caches next to its store",
            ),
        ] {
            let err = open_cached(url, 100).await.err().expect("refused");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}");
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn open_cached_makes_a_cached_sqlite_store() {
        use cloakroom::{Policy, Record, SessionId};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let err = open_cached(&url, 0)
            .await
            .err()
            .expect("a cache of nothing");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let store = open_cached(&url, 100).await.unwrap();
        let r = Record::new(
            SessionId::generate().unwrap().hash(),
            1_700_000_000,
            &Policy::default(),
        );
        store.create(&r, r.last_seen).await.unwrap();
        assert!(store
            .load(&r.id_hash, 1_700_000_001)
            .await
            .unwrap()
            .is_some());
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn open_makes_a_working_sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = open(&url).await.unwrap();
        assert_eq!(store.user_epoch("nobody").await.unwrap(), 0);
        assert!(dir.path().join("s.db").exists());
    }
}

#[cfg(all(test, feature = "remote"))]
mod remote_tests {
    use super::*;

    #[tokio::test]
    async fn a_cloakroomd_url_opens_a_remote_store_that_reports_an_absent_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "cloakroomd+ipc://{}",
            dir.path().join("cloakroomd.sock").display()
        );
        // No daemon there: `open` PINGs it, and says it is unavailable (after the default
        // 2 s timeout), never another store.
        let err = open(&url).await.err().expect("no daemon to open");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
}
