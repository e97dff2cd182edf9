//! Session stores for Cloakroom, one module per backend behind a feature of the same name.
//!
//! | feature | store | for |
//! |---|---|---|
//! | `file` | one file per session in a directory | one machine, no database |
//! | `sqlite` (default) | one SQLite file | the embedded default |
//! | `redis` | Redis (and Redis Cluster) | many machines |
//! | `postgres` | PostgreSQL | many machines |
//! | `memcached` | memcached | many machines, sessions may be evicted |
//! | `remote` | the session daemon `cloakroomd`, over CRP1 | many machines, apps in any language |
//!
//! Feature `wire` (implied by `remote`) adds [`wire`]: the conversions between the session
//! core's types and CRP1's wire types, which the remote store and the daemon share.
//!
//! Every store implements [`cloakroom::Store`] and passes the conformance suite
//! (`cloakroom::conformance::run`) against the real backend.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

// Stores, one per feature.

// One machine (issue 4): a directory of files; one SQLite file, the embedded default.
#[cfg(any(feature = "file", feature = "sqlite"))]
mod blocking;
#[cfg(feature = "file")]
mod file;
#[cfg(feature = "file")]
pub use file::FileStore;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous, SQLITE_SCHEMA_VERSION};

// Many machines (issue 6): Redis, PostgreSQL, memcached.
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "postgres", feature = "memcached"))]
mod stripes;
// The builder settings the networked stores share.
#[cfg(any(feature = "redis", feature = "postgres", feature = "memcached"))]
mod options;
#[cfg(feature = "redis")]
pub use crate::redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use crate::postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "memcached")]
mod memcached;
#[cfg(feature = "memcached")]
pub use crate::memcached::{MemcachedStore, MemcachedStoreBuilder};

// The session daemon (issue 13): a client of cloakroomd's store verbs.
#[cfg(feature = "remote")]
mod remote;
#[cfg(feature = "remote")]
pub use crate::remote::{
    RemoteError, RemoteStore, RemoteStoreBuilder, DEFAULT_MAX_REPLY, DEFAULT_MAX_REQUEST,
    DEFAULT_REMOTE_TIMEOUT,
};

// Session-core types <-> CRP1 wire types, for the remote store and the daemon.
#[cfg(feature = "wire")]
pub mod wire;
// What the networked stores share: URL options, the plaintext guard, TLS roots (issue 15).
#[cfg(any(feature = "redis", feature = "postgres"))]
mod transport;

// One URL names any of them (`--store`, `CLOAKROOM_STORE`).
mod url;
pub use crate::url::{open, open_cached, StoreUrl, SCHEMES};

// Reads without a round trip (issue 12): a cache in front of any store, kept coherent by
// the backend's own invalidation (SQLite data_version, Redis tracking, PostgreSQL LISTEN).
mod cache;
pub use crate::cache::{CacheStats, CachedStore, DEFAULT_CAPACITY, FIRST_RETRY, HEARTBEAT};
